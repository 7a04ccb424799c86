"""The live lock set: what each event means, what a pass corrects, and what scrapes read."""

from __future__ import annotations

import bisect
import math
import random
import tracemalloc
from typing import Any

import pytest

from lock_monitor.liveset import (
    HOLD_BUCKETS,
    KEY_KEPT,
    LIVE_LOCKS_LIMIT,
    RECONCILE_CHUNK,
    UNKNOWN,
    ByAge,
    LiveSet,
    Stream,
)
from lock_monitor.locks import display

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


def times(live: LiveSet) -> dict[bytes, float]:
    """Each held lock's acquisition time."""
    return {key: at for key, (at, _) in live.held.items()}


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
    assert (hold.buckets[-1], hold.total) == (1, pytest.approx(2.5))
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
    assert counters.hold["released"].buckets[-1] == 0


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
    assert times(live) == {b"lock:1": REDIS_AT_START + 100}


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
    assert times(live) == {b"lock:1": UNKNOWN}
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
    assert times(live) == {b"lock:stamped": REDIS_AT_START - 0.2, b"lock:token": REDIS_AT_START}


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


# --- hold times only for locks whose acquisition was seen -------------------------------------


def test_a_lock_first_seen_by_a_pass_ends_without_a_hold_time(live: LiveSet, clock: Clock) -> None:
    """Held before the monitor listened: the pass's first sighting tells when it becomes stuck,
    not how long it was held; only the holder's own stamp does."""
    seed(
        live,
        (b"lock:token", REDIS_AT_START - 3, True, False),  # first seen by the pass
        (b"lock:stamped", REDIS_AT_START - 3, True, True),  # `<epoch-ms>` in its value
    )
    clock.now += 28
    assert live.counts().stuck == 2  # both held for more than 30 s by then
    send(live.stream(PREFIX), ("lock:token", "evicted"), ("lock:stamped", "evicted"))
    hold = live.counters().hold["evicted"]
    assert (hold.buckets[-1], hold.total) == (1, pytest.approx(31))
    assert [end.hold_seconds for end in live.counters().recent] == [None, pytest.approx(31)]


def test_an_acquisition_seen_keeps_its_hold_time_through_passes_and_renames(
    live: LiveSet, clock: Clock
) -> None:
    seed(live, (b"lock:old", REDIS_AT_START, True, False))
    stream = live.stream(PREFIX)
    acquire(stream, "lock:new")
    clock.now += 1
    # The next pass first sees lock:new now, without a stamp: the event's time stays.
    live.reconcile(
        live.begin_pass(),
        [
            (b"lock:old", REDIS_AT_START, True, False),
            (b"lock:new", REDIS_AT_START + 1, True, False),
        ],
    )
    send(stream, ("lock:new", "rename_from"), ("lock:moved", "rename_to"))
    send(stream, ("lock:old", "rename_from"), ("lock:old2", "rename_to"))
    clock.now += 1
    send(stream, ("lock:moved", "del"), ("lock:old2", "del"))
    hold = live.counters().hold["released"]
    assert (hold.buckets[-1], hold.total) == (1, pytest.approx(2))


# --- Redisson's hash locks ------------------------------------------------------------------


def test_a_hash_lock_released_as_redisson_does_is_not_a_renewal(live: LiveSet) -> None:
    """Redisson unlocks with HINCRBY -1, then DEL once the count is 0: no renewal there."""
    seed(live)
    stream = live.stream(PREFIX)
    send(stream, ("lock:h", "hincrby"), ("lock:h", "expire"))  # lock()
    send(stream, ("lock:h", "hincrby"), ("lock:h", "del"))  # unlock()
    counters = live.counters()
    assert (counters.acquisitions, counters.renewals, counters.releases["released"]) == (1, 0, 1)


def test_a_hash_field_written_on_a_held_lock_is_not_a_renewal_but_its_ttl_is(
    live: LiveSet,
) -> None:
    seed(live)
    stream = live.stream(PREFIX)
    send(stream, ("lock:h", "hset"), ("lock:h", "expire"))
    send(stream, ("lock:h", "hset"))
    assert live.counters().renewals == 0
    send(stream, ("lock:h", "hincrby"), ("lock:h", "expire"))  # re-entered: the TTL set again
    assert live.counters().renewals == 1
    assert live.counts().without_ttl == 0  # HSET keeps a TTL


# --- nothing under the lock walks every held lock ---------------------------------------------


class NoWalk(dict[bytes, Any]):
    """A dict that may be read by key, never walked."""

    def __iter__(self) -> Any:
        raise AssertionError("walked every held lock")

    values = items = keys = __iter__


def test_the_counts_are_read_without_walking_every_lock(live: LiveSet, clock: Clock) -> None:
    seed(live, *[(b"lock:%d" % i, REDIS_AT_START - i, i % 3 == 0, True) for i in range(3000)])
    live.held = NoWalk(live.held)
    counts = live.counts()
    assert (counts.active, counts.without_ttl) == (3000, 2000)
    assert counts.stuck == 3000 - 31  # acquired more than 30 s ago: i > 30
    assert counts.oldest_age_seconds == pytest.approx(2999)
    clock.now += 10
    assert live.counts().stuck == 3000 - 21
    send(live.stream(PREFIX), ("lock:2999", "del"), ("lock:0", "del"))
    assert live.counts().oldest_age_seconds == pytest.approx(3008)
    assert live.counts().stuck == 3000 - 21 - 1


class Watched:
    """The live set's lock, noting how many locks are held each time it is taken."""

    def __init__(self, live: LiveSet) -> None:
        self.live, self.inner, self.sizes = live, live.lock, list[int]()

    def __enter__(self) -> None:
        self.inner.acquire()
        self.sizes.append(len(self.live.held))

    def __exit__(self, *exc: object) -> None:
        self.inner.release()


def test_a_pass_sweeps_the_locks_it_did_not_read_a_chunk_at_a_time(live: LiveSet) -> None:
    """Events and scrapes wait for a chunk, not for the whole set."""
    count = 5 * RECONCILE_CHUNK
    seed(live, *[(b"lock:%d" % i, REDIS_AT_START, True, True) for i in range(count)])
    watched = live.lock = Watched(live)  # type: ignore[assignment]
    result = live.reconcile(live.begin_pass(), [])  # all of them released, the events lost
    assert result.corrections == count
    assert live.held == {}
    between = {size for size in watched.sizes if 0 < size < count}
    assert len(between) >= 4, watched.sizes  # others could take the lock in between


def test_ordered_by_age_agrees_with_a_sorted_list() -> None:
    rng = random.Random(13)
    order, expected = ByAge(), list[tuple[float, bytes]]()
    for step in range(20_000):
        if expected and rng.random() < 0.45:
            entry = expected.pop(rng.randrange(len(expected)))
            order.remove(entry)
        else:
            entry = (float(rng.randrange(500)) if step % 7 else math.inf, b"%d" % step)
            bisect.insort(expected, entry)
            order.add(entry)
        if step % 97 == 0:
            cutoff = float(rng.randrange(520))
            assert order.count_before(cutoff) == bisect.bisect_left(expected, (cutoff,))
            assert order.first() == (expected[0] if expected else None)
            middle = expected[len(expected) // 2] if expected else None
            assert order.after(middle, 50) == expected[len(expected) // 2 + 1 :][:50]
    assert order.after(None, len(expected) + 1) == expected


# --- memory, in bytes -----------------------------------------------------------------------


def test_long_keys_cost_a_bounded_number_of_bytes_each(live: LiveSet) -> None:
    """Hostile key names: the set keeps a short start and a digest of each, and a pass's
    record of the keys events touched keeps no copy of them."""
    seed(live)
    stream = live.stream(PREFIX)
    count, long_key = 2000, "lock:" + "k" * 10_000 + "%d"
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            acquire(stream, long_key % i)
        live.begin_pass()
        for i in range(count):
            send(stream, (long_key % i, "expire"))  # renewed while a pass runs
        per_lock = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
    assert live.counts().active == count
    assert per_lock < KEY_KEPT + 500, per_lock


def test_the_locks_a_page_lists_that_ended_since_are_told_when_shown_exactly(
    live: LiveSet,
) -> None:
    long_key = b"lock:" + b"k" * 300
    keys = [b"lock:held", b"lock:gone", b"lock:\xff", long_key]
    assert live.current([]) is None  # not current yet: nothing to tell
    seed(live, *[(key, REDIS_AT_START, True, True) for key in keys])
    stream = live.stream(PREFIX)
    stream.apply([[b"pmessage", b"*", PREFIX + key, b"del"] for key in keys[1:]])
    shown = [display(key, "key") for key in keys]
    assert shown[2:] == ["lock:\\xff", "lock:" + "k" * 195 + "…"]
    current = live.current(shown)
    assert current is not None
    assert current.ended == {"lock:gone"}  # the others' display is not the key itself
    assert current.counts.active == 1
