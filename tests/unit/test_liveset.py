"""The live lock set: what scrapes read, and what it costs whatever the keys."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import pytest

from lock_monitor.eventstream import Stream
from lock_monitor.liveset import LIVE_LOCKS_LIMIT, LiveSet
from lock_monitor.locks import display
from lock_monitor.passlocks import KEY_KEPT
from lock_monitor.reconcile import begin_pass, reconcile
from tests.unit.live import PREFIX, REDIS_AT_START, START, Clock, acquire, seed, send


def test_stuck_is_judged_at_read_time_not_at_event_time(live: LiveSet, clock: Clock) -> None:
    seed(live)
    acquire(Stream(live, PREFIX), "lock:1")
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
    acquire(Stream(live, PREFIX), "lock:1")
    assert live.held == {b"lock:1": REDIS_AT_START + 100}


def test_the_set_stops_growing_at_its_limit(clock: Clock) -> None:
    live = LiveSet(stuck_threshold=30, limit=3, clock=clock)
    seed(live)
    stream = Stream(live, PREFIX)
    for i in range(5):
        acquire(stream, f"lock:{i}")
    assert len(live.held) == 3
    assert not live.usable()  # incomplete: the passes' numbers are shown instead
    assert live.counters().acquisitions == 5
    reconcile(live, begin_pass(live), [(b"lock:0", REDIS_AT_START, True, True)])
    assert live.usable()
    assert set(live.held) == {b"lock:0"}


def test_the_limit_is_large_enough_for_the_documented_figure() -> None:
    assert LIVE_LOCKS_LIMIT >= 100_000


def test_recent_ends_are_bounded_and_printable(live: LiveSet) -> None:
    seed(live)
    stream = Stream(live, PREFIX)
    for i in range(50):
        send(stream, (f"lock:{i}", "evicted"))
    send(stream, ("lock:\x1b[31m" + "x" * 500, "expired"))
    recent = live.counters().recent
    assert len(recent) == 10
    assert recent[-1].key.endswith("…")
    assert len(recent[-1].key) <= 201


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
    send(Stream(live, PREFIX), ("lock:2999", "del"), ("lock:0", "del"))
    assert live.counts().oldest_age_seconds == pytest.approx(3008)
    assert live.counts().stuck == 3000 - 21 - 1


def test_long_keys_cost_a_bounded_number_of_bytes_each(live: LiveSet) -> None:
    """Hostile key names: the set keeps a short start and a digest of each, and a pass's
    record of the keys events touched keeps no copy of them."""
    seed(live)
    stream = Stream(live, PREFIX)
    count, long_key = 2000, "lock:" + "k" * 10_000 + "%d"
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            acquire(stream, long_key % i)
        begin_pass(live)
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
    stream = Stream(live, PREFIX)
    stream.apply([[b"pmessage", b"*", PREFIX + key, b"del"] for key in keys[1:]])
    shown = [display(key, "key") for key in keys]
    assert shown[2:] == ["lock:\\xff", "lock:" + "k" * 195 + "…"]
    current = live.current(shown)
    assert current is not None
    assert current.ended == {"lock:gone"}  # the others' display is not the key itself
    assert current.counts.active == 1


def test_a_full_garbage_collection_does_not_walk_the_held_locks(live: LiveSet) -> None:
    """Full collections come every few seconds while a pass reads a million locks: the keys
    and times are kept in dicts holding nothing the collector tracks, which it never walks."""
    seed(live, (b"lock:old", REDIS_AT_START, False, False))
    stream = Stream(live, PREFIX)
    begin_pass(live)
    for i in range(100):
        acquire(stream, f"lock:{i}")
    send(stream, ("lock:0", "set"), ("lock:1", "persist"), ("lock:2", "del"))
    assert live.touched is not None
    assert live.no_ttl
    assert live.first_seen
    held = (live.held, live.no_ttl, live.first_seen, live.touched)
    assert [gc.is_tracked(keys) for keys in held] == [False] * 4
