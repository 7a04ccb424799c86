"""What a pass corrects in the live set, and when that makes the set current."""

from __future__ import annotations

import pytest

from lock_monitor.eventstream import Stream
from lock_monitor.liveset import UNKNOWN, LiveSet
from lock_monitor.reconcile import RECONCILE_CHUNK, begin_pass, reconcile
from tests.unit.live import (
    PREFIX,
    REDIS_AT_START,
    Clock,
    acquire,
    pass_locks,
    seed,
    send,
    subscribe,
)


def test_a_pass_seeds_the_set_without_counting_corrections(live: LiveSet) -> None:
    subscribe(live)
    mark = begin_pass(live)
    assert not live.usable()
    corrections = reconcile(
        live,
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
    mark = begin_pass(live)
    subscribe(live)
    reconcile(live, mark, [])
    assert not live.usable()
    reconcile(live, begin_pass(live), [])
    assert live.usable()


def test_a_lost_subscription_makes_the_set_unusable_until_a_full_pass(live: LiveSet) -> None:
    seed(live)
    mark = begin_pass(live)
    live.subscriptions_changed(False)
    subscribe(live)  # back, but events were lost in between
    reconcile(live, mark, [])
    assert not live.usable()
    reconcile(live, begin_pass(live), [])
    assert live.usable()


def test_corrections_after_a_gap_are_counted(live: LiveSet) -> None:
    seed(live, (b"lock:gone", REDIS_AT_START, True, True))
    live.subscriptions_changed(False)  # released while nobody listened
    subscribe(live)
    mark = begin_pass(live)
    corrections = reconcile(
        live,
        mark,
        [
            (b"lock:missed", REDIS_AT_START, True, True),
            (b"lock:nottl", REDIS_AT_START, False, True),
        ],
    )
    assert corrections == (3, False)  # events were lost: differences are no surprise
    assert live.counters().corrections == 3
    assert set(live.held) == {b"lock:missed", b"lock:nottl"}
    assert set(live.no_ttl) == {b"lock:nottl"}
    assert live.counters().releases["released"] == 0  # an outcome the events never saw


def test_a_ttl_the_events_missed_is_corrected(live: LiveSet) -> None:
    seed(live, (b"lock:1", REDIS_AT_START, True, True))
    corrections = reconcile(live, begin_pass(live), [(b"lock:1", REDIS_AT_START, False, True)])
    assert corrections == (1, True)
    assert live.counts().without_ttl == 1


def test_events_during_a_pass_win_over_what_the_pass_read(live: LiveSet) -> None:
    seed(live, (b"lock:released", REDIS_AT_START, True, True))
    stream = Stream(live, PREFIX)
    mark = begin_pass(live)
    # The pass read both locks, then both changed before it finished.
    send(stream, ("lock:released", "del"))
    acquire(stream, "lock:taken")
    corrections = reconcile(live, mark, [(b"lock:released", REDIS_AT_START, True, True)])
    assert corrections == (0, True)
    assert set(live.held) == {b"lock:taken"}


def test_a_lock_seen_by_its_expire_only_gets_its_age_from_the_next_pass(
    live: LiveSet,
) -> None:
    seed(live)
    mark = begin_pass(live)
    send(Stream(live, PREFIX), ("lock:1", "expire"))  # held since before we listened
    assert live.held == {b"lock:1": UNKNOWN}
    assert live.counts().stuck == 0  # unknown age: never stuck
    reconcile(live, mark, [(b"lock:1", REDIS_AT_START - 60, True, True)])
    assert live.counts().stuck == 1


def test_the_holders_stamp_wins_over_the_arrival_time(live: LiveSet, clock: Clock) -> None:
    seed(live)
    acquire(Stream(live, PREFIX), "lock:stamped")
    acquire(Stream(live, PREFIX), "lock:token")
    clock.now += 1
    reconcile(
        live,
        begin_pass(live),
        [
            (b"lock:stamped", REDIS_AT_START - 0.2, True, True),
            (b"lock:token", REDIS_AT_START + 1, True, False),  # first seen by the pass, later
        ],
    )
    assert live.held == {b"lock:stamped": REDIS_AT_START - 0.2, b"lock:token": REDIS_AT_START}


def test_keys_touched_during_a_pass_are_bounded(clock: Clock) -> None:
    live = LiveSet(stuck_threshold=30, limit=2, clock=clock)
    seed(live)
    stream = Stream(live, PREFIX)
    mark = begin_pass(live)
    for i in range(5):
        send(stream, (f"lock:{i}", "del"))
    assert live.touched is not None
    assert len(live.touched) == 2
    # Overflowed: the pass cannot say what was released while it ran, so it adds nothing new
    # (the next pass will) and removes nothing.
    reconcile(live, mark, [(b"lock:4", REDIS_AT_START, True, True)])
    assert live.held == {}
    assert live.touched is None


def test_a_server_not_known_to_publish_leaves_the_set_unused_and_uncounted(live: LiveSet) -> None:
    """Subscribed where CONFIG GET is refused: until an event arrives, the passes rule."""
    live.subscriptions_changed(True)
    reconcile(live, begin_pass(live), [])
    assert not live.usable()
    result = reconcile(live, begin_pass(live), [(b"lock:1", REDIS_AT_START, True, True)])
    assert result == (1, True)  # comparable: a lock came and no event said so
    assert live.counters().corrections == 0
    live.set_verified(True)
    assert live.usable()


def test_a_huge_key_is_kept_bounded_and_still_matches_the_pass(live: LiveSet) -> None:
    seed(live)
    huge = "lock:" + "k" * 100_000
    acquire(Stream(live, PREFIX), huge)
    assert live.counts().active == 1
    assert sum(len(key) for key in live.held) < 2_000
    # The pass reads the same key: the same lock, not a second one, nothing corrected.
    read = pass_locks((huge.encode(), REDIS_AT_START, True, True))
    assert reconcile(live, begin_pass(live), read).corrections == 0
    send(Stream(live, PREFIX), (huge, "del"))
    assert live.counts().active == 0


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
    send(Stream(live, PREFIX), ("lock:token", "evicted"), ("lock:stamped", "evicted"))
    hold = live.counters().hold["evicted"]
    assert (hold.buckets[-1], hold.total) == (1, pytest.approx(31))
    assert [end.hold_seconds for end in live.counters().recent] == [None, pytest.approx(31)]


def test_an_acquisition_seen_keeps_its_hold_time_through_passes_and_renames(
    live: LiveSet, clock: Clock
) -> None:
    seed(live, (b"lock:old", REDIS_AT_START, True, False))
    stream = Stream(live, PREFIX)
    acquire(stream, "lock:new")
    clock.now += 1
    # The next pass first sees lock:new now, without a stamp: the event's time stays.
    reconcile(
        live,
        begin_pass(live),
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
    result = reconcile(live, begin_pass(live), [])  # all of them released, the events lost
    assert result.corrections == count
    assert live.held == {}
    between = {size for size in watched.sizes if 0 < size < count}
    assert len(between) >= 4, watched.sizes  # others could take the lock in between
