import math

from lock_monitor.locks import Lock
from lock_monitor.snapshot import SnapshotBuilder
from lock_monitor.tracker import PageVerdict


def lock(key: str, age: float, stuck: bool = False, ttl: float | None = 10.0) -> Lock:
    return Lock(key, "v", "string", ttl, age, "value", stuck)


def page(*locks: Lock) -> PageVerdict:
    """A page whose locks were all built in full."""
    stuck = sum(lock.stuck for lock in locks)
    without_ttl = sum(lock.ttl_seconds is None for lock in locks)
    first_seen = sum(lock.age_source == "first_seen" for lock in locks)
    return PageVerdict(len(locks), stuck, 0, without_ttl, first_seen, list(locks), [], stuck)


def test_counts_and_oldest_first() -> None:
    builder = SnapshotBuilder(keep_oldest=2)
    builder.add(page(lock("a", 5), lock("b", 50, stuck=True)))
    builder.add(page(lock("c", 1, ttl=None), lock("d", 40, stuck=True)))
    builder.keys_scanned = 6
    snap = builder.build(completed_at=100.0, duration_seconds=0.25)
    assert (snap.active, snap.stuck, snap.without_ttl, snap.keys_scanned) == (4, 2, 1, 6)
    assert [x.key for x in snap.oldest] == ["b", "d"]
    assert snap.oldest_age_seconds == 50


def test_pages_are_asked_only_for_locks_older_than_the_kept_ones() -> None:
    builder = SnapshotBuilder(keep_oldest=2)
    assert builder.older_than() == -math.inf  # not full yet: any lock is kept
    builder.keep([lock("a", 5), lock("b", 50), lock("c", 7)])
    assert builder.older_than() == 7
    assert SnapshotBuilder(keep_oldest=0).older_than() == math.inf
    assert SnapshotBuilder(keep_oldest=None).older_than() == -math.inf


def test_keep_oldest_none_keeps_every_lock_sorted() -> None:
    builder = SnapshotBuilder(keep_oldest=None)
    builder.keep(lock(f"k{i}", float(i % 7)) for i in range(50))
    snap = builder.build(0, 0)
    ages = [x.age_seconds for x in snap.oldest]
    assert len(ages) == 50
    assert ages == sorted(ages, reverse=True)


def test_keep_oldest_zero_keeps_only_counts() -> None:
    builder = SnapshotBuilder(keep_oldest=0)
    builder.add(page(lock("a", 5, stuck=True)))
    snap = builder.build(0, 0)
    assert (snap.active, snap.stuck, snap.oldest) == (1, 1, ())


def test_no_locks() -> None:
    snap = SnapshotBuilder().build(0, 0)
    assert (snap.active, snap.oldest, snap.oldest_age_seconds) == (0, (), 0.0)
