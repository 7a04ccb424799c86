"""The live lock set: what each event means, what a pass corrects, and what scrapes read."""

from __future__ import annotations

import pytest

from lock_monitor.liveset import HOLD_BUCKETS, LIVE_LOCKS_LIMIT, UNKNOWN, LiveSet, Stream

PREFIX = b"__keyspace@0__:"
START = 1000.0  # this host's monotonic clock at the start of each test
REDIS_AT_START = 1_800_000_000.0  # Redis' clock at that moment


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def live(clock: Clock) -> LiveSet:
    live = LiveSet(stuck_threshold=30, clock=clock)
    live.measure_offset(REDIS_AT_START, START)
    return live


def seed(live: LiveSet, *locks: tuple[bytes, float, bool, bool]) -> None:
    """Subscribed, and a first pass reconciled: the set is authoritative."""
    subscribe(live)
    live.reconcile(live.begin_pass(), list(locks))
    assert live.usable()


def subscribe(live: LiveSet) -> None:
    live.subscriptions_changed(True)
    live.set_verified(True)


def send(stream: Stream, *events: tuple[str, str]) -> None:
    stream.apply(
        [[b"pmessage", PREFIX + b"*", PREFIX + key.encode(), e.encode()] for key, e in events]
    )


def acquire(stream: Stream, key: str) -> None:
    """SET key value PX 30000 NX, as the backend takes a lock: `set` then `expire`."""
    send(stream, (key, "set"), (key, "expire"))


def test_a_set_with_its_own_expire_is_one_acquisition_with_a_ttl(live: LiveSet) -> None:
    seed(live)
    acquire(live.stream(PREFIX), "lock:1")
    counts = live.counts()
    assert (counts.active, counts.without_ttl, counts.stuck) == (1, 0, 0)
    counters = live.counters()
    assert (counters.acquisitions, counters.renewals, counters.received) == (1, 0, 2)


def test_a_set_without_expire_is_a_lock_without_ttl(live: LiveSet) -> None:
    seed(live)
    send(live.stream(PREFIX), ("lock:1", "set"))
    assert live.counts().without_ttl == 1
    send(live.stream(PREFIX), ("lock:1", "expire"))  # a later PEXPIRE: a renewal that adds a TTL
    assert live.counts().without_ttl == 0
    assert live.counters().renewals == 1
    send(live.stream(PREFIX), ("lock:1", "persist"))
    assert live.counts().without_ttl == 1


def test_renewals_by_pexpire_and_by_set_again(live: LiveSet) -> None:
    seed(live)
    stream = live.stream(PREFIX)
    acquire(stream, "lock:1")
    send(stream, ("lock:1", "expire"))  # PEXPIRE by the holder
    acquire(stream, "lock:1")  # redlock's extend: SET again with a new PX (set + its expire)
    counters = live.counters()
    assert (counters.acquisitions, counters.renewals) == (1, 2)
    assert live.counts().active == 1


def test_an_expire_follows_only_its_own_set(live: LiveSet) -> None:
    seed(live)
    stream = live.stream(PREFIX)
    acquire(stream, "lock:1")
    send(stream, ("lock:2", "set"), ("lock:1", "expire"))  # lock:2 has no TTL; lock:1 renewed
    assert live.counters().renewals == 1
    assert live.counts().without_ttl == 1


def test_streams_keep_their_own_order(live: LiveSet) -> None:
    """Two nodes' events never pair up: a `set` on one and an `expire` on another."""
    seed(live)
    one, two = live.stream(PREFIX), live.stream(PREFIX)
    send(one, ("lock:1", "set"))
    acquire(two, "lock:2")
    send(one, ("lock:1", "expire"))
    assert (live.counters().acquisitions, live.counters().renewals) == (2, 0)


@pytest.mark.parametrize(
    ("event", "outcome"), [("del", "released"), ("expired", "expired"), ("evicted", "evicted")]
)
def test_each_end_counts_its_outcome_and_observes_the_hold_time(
    live: LiveSet, clock: Clock, event: str, outcome: str
) -> None:
    seed(live)
    stream = live.stream(PREFIX)
    acquire(stream, "lock:1")
    clock.now += 2.5
    send(stream, ("lock:1", event))
    counters = live.counters()
    assert counters.releases == {
        name: int(name == outcome) for name in ("released", "expired", "evicted")
    }
    hold = counters.hold[outcome]
    assert (hold.count, hold.total) == (1, pytest.approx(2.5))
    assert hold.buckets[HOLD_BUCKETS.index(2.5)] == 1  # le="2.5" includes 2.5
    assert hold.buckets[HOLD_BUCKETS.index(1.0)] == 0
    assert live.counts().active == 0
    recent = [(end.key, end.outcome, end.hold_seconds) for end in counters.recent]
    assert recent == ([] if outcome == "released" else [("lock:1", outcome, pytest.approx(2.5))])


def test_an_end_of_a_lock_held_before_listening_counts_without_a_hold_time(
    live: LiveSet,
) -> None:
    seed(live)
    send(live.stream(PREFIX), ("lock:old", "del"))
    counters = live.counters()
    assert counters.releases["released"] == 1
    assert counters.hold["released"].count == 0


def test_hash_locks(live: LiveSet) -> None:
    """Redisson: HINCRBY (or HSET) and PEXPIRE to take, HINCRBY again to re-enter, DEL."""
    seed(live)
    stream = live.stream(PREFIX)
    send(stream, ("lock:h", "hincrby"), ("lock:h", "expire"))
    assert (live.counters().acquisitions, live.counts().without_ttl) == (1, 0)
    send(stream, ("lock:h", "hincrby"), ("lock:h", "expire"))
    assert live.counters().renewals == 1
    send(stream, ("lock:h", "del"))
    assert live.counts().active == 0


def test_rename_moves_a_lock_with_its_acquisition_time(live: LiveSet, clock: Clock) -> None:
    seed(live)
    stream = live.stream(PREFIX)
    acquire(stream, "lock:a")
    clock.now += 40
    send(stream, ("lock:a", "rename_from"), ("lock:b", "rename_to"))
    counts = live.counts()
    assert (counts.active, counts.stuck) == (1, 1)
    assert live.counters().acquisitions == 1
    send(stream, ("lock:b", "rename_from"))  # renamed out of the pattern: gone, not an end
    send(stream, ("lock:c", "set"))
    assert live.counts().active == 1
    assert sum(live.counters().releases.values()) == 0


def test_other_events_and_messages_are_ignored_but_counted_as_received(live: LiveSet) -> None:
    seed(live)
    stream = live.stream(PREFIX)
    stream.apply([[b"psubscribe", PREFIX + b"*", 1], [b"pong", b""]])  # type: ignore[list-item]
    send(stream, ("lock:1", "incrby"))
    assert live.counters().received == 1
    assert live.counts().active == 0


def test_stuck_is_judged_at_read_time_not_at_event_time(live: LiveSet, clock: Clock) -> None:
    seed(live)
    acquire(live.stream(PREFIX), "lock:1")
    clock.now += 30
    assert live.counts().stuck == 0
    clock.now += 0.5
    counts = live.counts()
    assert counts.stuck == 1
    assert counts.oldest_age_seconds == pytest.approx(30.5)


def test_arrival_times_are_converted_to_redis_time(live: LiveSet, clock: Clock) -> None:
    """A pass measured the offset; an event's acquisition is in Redis time."""
    seed(live)
    live.measure_offset(REDIS_AT_START + 100, START)  # Redis' clock is 100 s ahead of before
    acquire(live.stream(PREFIX), "lock:1")
    assert live.held[b"lock:1"] == REDIS_AT_START + 100


def test_a_pass_seeds_the_set_without_counting_corrections(live: LiveSet) -> None:
    subscribe(live)
    mark = live.begin_pass()
    assert not live.usable()
    corrections = live.reconcile(
        mark,
        [(b"lock:1", REDIS_AT_START - 90, True, True), (b"lock:2", REDIS_AT_START, False, False)],
    )
    assert corrections == (2, False)  # nothing to compare with yet
    counts = live.counts()
    assert (counts.active, counts.stuck, counts.without_ttl) == (2, 1, 1)
    assert counts.oldest_age_seconds == pytest.approx(90)
    assert live.usable()
    assert live.counters().corrections == 0


def test_a_pass_that_began_before_the_subscription_does_not_make_the_set_usable(
    live: LiveSet,
) -> None:
    mark = live.begin_pass()
    subscribe(live)
    live.reconcile(mark, [])
    assert not live.usable()
    live.reconcile(live.begin_pass(), [])
    assert live.usable()


def test_a_lost_subscription_makes_the_set_unusable_until_a_full_pass(live: LiveSet) -> None:
    seed(live)
    mark = live.begin_pass()
    live.subscriptions_changed(False)
    subscribe(live)  # back, but events were lost in between
    live.reconcile(mark, [])
    assert not live.usable()
    live.reconcile(live.begin_pass(), [])
    assert live.usable()


def test_corrections_after_a_gap_are_counted(live: LiveSet) -> None:
    seed(live, (b"lock:gone", REDIS_AT_START, True, True))
    live.subscriptions_changed(False)  # released while nobody listened
    subscribe(live)
    mark = live.begin_pass()
    corrections = live.reconcile(
        mark,
        [
            (b"lock:missed", REDIS_AT_START, True, True),
            (b"lock:nottl", REDIS_AT_START, False, True),
        ],
    )
    assert corrections == (3, False)  # events were lost: differences are no surprise
    assert live.counters().corrections == 3
    assert set(live.held) == {b"lock:missed", b"lock:nottl"}
    assert live.no_ttl == {b"lock:nottl"}
    assert live.counters().releases["released"] == 0  # an outcome the events never saw


def test_a_ttl_the_events_missed_is_corrected(live: LiveSet) -> None:
    seed(live, (b"lock:1", REDIS_AT_START, True, True))
    corrections = live.reconcile(live.begin_pass(), [(b"lock:1", REDIS_AT_START, False, True)])
    assert corrections == (1, True)
    assert live.counts().without_ttl == 1


def test_events_during_a_pass_win_over_what_the_pass_read(live: LiveSet) -> None:
    seed(live, (b"lock:released", REDIS_AT_START, True, True))
    stream = live.stream(PREFIX)
    mark = live.begin_pass()
    # The pass read both locks, then both changed before it finished.
    send(stream, ("lock:released", "del"))
    acquire(stream, "lock:taken")
    corrections = live.reconcile(mark, [(b"lock:released", REDIS_AT_START, True, True)])
    assert corrections == (0, True)
    assert set(live.held) == {b"lock:taken"}


def test_a_lock_seen_by_its_expire_only_gets_its_age_from_the_next_pass(
    live: LiveSet,
) -> None:
    seed(live)
    mark = live.begin_pass()
    send(live.stream(PREFIX), ("lock:1", "expire"))  # held since before we listened
    assert live.held[b"lock:1"] == UNKNOWN
    assert live.counts().stuck == 0  # unknown age: never stuck
    live.reconcile(mark, [(b"lock:1", REDIS_AT_START - 60, True, True)])
    assert live.counts().stuck == 1


def test_the_holders_stamp_wins_over_the_arrival_time(live: LiveSet, clock: Clock) -> None:
    seed(live)
    acquire(live.stream(PREFIX), "lock:stamped")
    acquire(live.stream(PREFIX), "lock:token")
    clock.now += 1
    live.reconcile(
        live.begin_pass(),
        [
            (b"lock:stamped", REDIS_AT_START - 0.2, True, True),
            (b"lock:token", REDIS_AT_START + 1, True, False),  # first seen by the pass, later
        ],
    )
    assert live.held == {b"lock:stamped": REDIS_AT_START - 0.2, b"lock:token": REDIS_AT_START}


def test_the_set_stops_growing_at_its_limit(clock: Clock) -> None:
    live = LiveSet(stuck_threshold=30, limit=3, clock=clock)
    seed(live)
    stream = live.stream(PREFIX)
    for i in range(5):
        acquire(stream, f"lock:{i}")
    assert len(live.held) == 3
    assert not live.usable()  # incomplete: the passes' numbers are shown instead
    assert live.counters().acquisitions == 5
    live.reconcile(live.begin_pass(), [(b"lock:0", REDIS_AT_START, True, True)])
    assert live.usable()
    assert set(live.held) == {b"lock:0"}


def test_keys_touched_during_a_pass_are_bounded(clock: Clock) -> None:
    live = LiveSet(stuck_threshold=30, limit=2, clock=clock)
    seed(live)
    stream = live.stream(PREFIX)
    mark = live.begin_pass()
    for i in range(5):
        send(stream, (f"lock:{i}", "del"))
    assert live.touched is not None
    assert len(live.touched) == 2
    # Overflowed: the pass cannot say what was released while it ran, so it adds nothing new
    # (the next pass will) and removes nothing.
    live.reconcile(mark, [(b"lock:4", REDIS_AT_START, True, True)])
    assert live.held == {}
    assert live.touched is None


def test_the_limit_is_large_enough_for_the_documented_figure() -> None:
    assert LIVE_LOCKS_LIMIT >= 100_000


def test_recent_ends_are_bounded_and_printable(live: LiveSet) -> None:
    seed(live)
    stream = live.stream(PREFIX)
    for i in range(50):
        send(stream, (f"lock:{i}", "evicted"))
    send(stream, ("lock:\x1b[31m" + "x" * 500, "expired"))
    recent = live.counters().recent
    assert len(recent) == 10
    assert recent[-1].key.endswith("…")
    assert len(recent[-1].key) <= 201


def test_a_server_not_known_to_publish_leaves_the_set_unused_and_uncounted(live: LiveSet) -> None:
    """Subscribed where CONFIG GET is refused: until an event arrives, the passes rule."""
    live.subscriptions_changed(True)
    live.reconcile(live.begin_pass(), [])
    assert not live.usable()
    result = live.reconcile(live.begin_pass(), [(b"lock:1", REDIS_AT_START, True, True)])
    assert result == (1, True)  # comparable: a lock came and no event said so
    assert live.counters().corrections == 0
    live.set_verified(True)
    assert live.usable()


def test_a_huge_key_is_kept_bounded_and_still_matches_the_pass(live: LiveSet) -> None:
    seed(live)
    huge = "lock:" + "k" * 100_000
    acquire(live.stream(PREFIX), huge)
    assert live.counts().active == 1
    assert sum(len(key) for key in live.held) < 2_000
    # The pass reads the same key: the same lock, not a second one, nothing corrected.
    result = live.reconcile(live.begin_pass(), [(huge.encode(), REDIS_AT_START, True, True)])
    assert result.corrections == 0
    send(live.stream(PREFIX), (huge, "del"))
    assert live.counts().active == 0
