"""What each keyspace event of a node's stream means to the live set."""

from __future__ import annotations

import pytest

from lock_monitor.eventstream import Stream
from lock_monitor.livecounts import HOLD_BUCKETS
from lock_monitor.liveset import LiveSet
from tests.unit.live import PREFIX, Clock, acquire, seed, send


def test_a_set_with_its_own_expire_is_one_acquisition_with_a_ttl(live: LiveSet) -> None:
    seed(live)
    acquire(Stream(live, PREFIX), "lock:1")
    counts = live.counts()
    assert (counts.active, counts.without_ttl, counts.stuck) == (1, 0, 0)
    counters = live.counters()
    assert (counters.acquisitions, counters.renewals, counters.received) == (1, 0, 2)


def test_a_set_without_expire_is_a_lock_without_ttl(live: LiveSet) -> None:
    seed(live)
    send(Stream(live, PREFIX), ("lock:1", "set"))
    assert live.counts().without_ttl == 1
    send(Stream(live, PREFIX), ("lock:1", "expire"))  # a later PEXPIRE: a renewal that adds a TTL
    assert live.counts().without_ttl == 0
    assert live.counters().renewals == 1
    send(Stream(live, PREFIX), ("lock:1", "persist"))
    assert live.counts().without_ttl == 1


def test_renewals_by_pexpire_and_by_set_again(live: LiveSet) -> None:
    seed(live)
    stream = Stream(live, PREFIX)
    acquire(stream, "lock:1")
    send(stream, ("lock:1", "expire"))  # PEXPIRE by the holder
    acquire(stream, "lock:1")  # redlock's extend: SET again with a new PX (set + its expire)
    counters = live.counters()
    assert (counters.acquisitions, counters.renewals) == (1, 2)
    assert live.counts().active == 1


def test_an_expire_follows_only_its_own_set(live: LiveSet) -> None:
    seed(live)
    stream = Stream(live, PREFIX)
    acquire(stream, "lock:1")
    send(stream, ("lock:2", "set"), ("lock:1", "expire"))  # lock:2 has no TTL; lock:1 renewed
    assert live.counters().renewals == 1
    assert live.counts().without_ttl == 1


def test_streams_keep_their_own_order(live: LiveSet) -> None:
    """Two nodes' events never pair up: a `set` on one and an `expire` on another."""
    seed(live)
    one, two = Stream(live, PREFIX), Stream(live, PREFIX)
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
    stream = Stream(live, PREFIX)
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
    send(Stream(live, PREFIX), ("lock:old", "del"))
    counters = live.counters()
    assert counters.releases["released"] == 1
    assert counters.hold["released"].buckets[-1] == 0


def test_hash_locks(live: LiveSet) -> None:
    """Redisson: HINCRBY (or HSET) and PEXPIRE to take, HINCRBY again to re-enter, DEL."""
    seed(live)
    stream = Stream(live, PREFIX)
    send(stream, ("lock:h", "hincrby"), ("lock:h", "expire"))
    assert (live.counters().acquisitions, live.counts().without_ttl) == (1, 0)
    send(stream, ("lock:h", "hincrby"), ("lock:h", "expire"))
    assert live.counters().renewals == 1
    send(stream, ("lock:h", "del"))
    assert live.counts().active == 0


def test_rename_moves_a_lock_with_its_acquisition_time(live: LiveSet, clock: Clock) -> None:
    seed(live)
    stream = Stream(live, PREFIX)
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
    stream = Stream(live, PREFIX)
    stream.apply([[b"psubscribe", PREFIX + b"*", 1], [b"pong", b""]])  # type: ignore[list-item]
    send(stream, ("lock:1", "incrby"))
    assert live.counters().received == 1
    assert live.counts().active == 0


def test_a_hash_lock_released_as_redisson_does_is_not_a_renewal(live: LiveSet) -> None:
    """Redisson unlocks with HINCRBY -1, then DEL once the count is 0: no renewal there."""
    seed(live)
    stream = Stream(live, PREFIX)
    send(stream, ("lock:h", "hincrby"), ("lock:h", "expire"))  # lock()
    send(stream, ("lock:h", "hincrby"), ("lock:h", "del"))  # unlock()
    counters = live.counters()
    assert (counters.acquisitions, counters.renewals, counters.releases["released"]) == (1, 0, 1)


def test_a_hash_field_written_on_a_held_lock_is_not_a_renewal_but_its_ttl_is(
    live: LiveSet,
) -> None:
    seed(live)
    stream = Stream(live, PREFIX)
    send(stream, ("lock:h", "hset"), ("lock:h", "expire"))
    send(stream, ("lock:h", "hset"))
    assert live.counters().renewals == 0
    send(stream, ("lock:h", "hincrby"), ("lock:h", "expire"))  # re-entered: the TTL set again
    assert live.counters().renewals == 1
    assert live.counts().without_ttl == 0  # HSET keeps a TTL
