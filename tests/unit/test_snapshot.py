from lock_monitor.locks import Lock
from lock_monitor.snapshot import SnapshotBuilder


def lock(key: str, age: float, stuck: bool = False, ttl: float | None = 10.0) -> Lock:
    return Lock(key, "v", "string", ttl, age, "value", stuck)


def test_counts_and_oldest_first() -> None:
    builder = SnapshotBuilder(keep_oldest=2)
    for item in [
        lock("a", 5),
        lock("b", 50, stuck=True),
        lock("c", 1, ttl=None),
        lock("d", 40, stuck=True),
    ]:
        builder.add(item)
    builder.keys_scanned = 6
    snap = builder.build(completed_at=100.0, duration_seconds=0.25)
    assert (snap.active, snap.stuck, snap.without_ttl, snap.keys_scanned) == (4, 2, 1, 6)
    assert [x.key for x in snap.oldest] == ["b", "d"]
    assert snap.oldest_age_seconds == 50


def test_keep_oldest_none_keeps_every_lock_sorted() -> None:
    builder = SnapshotBuilder(keep_oldest=None)
    for i in range(50):
        builder.add(lock(f"k{i}", float(i % 7)))
    snap = builder.build(0, 0)
    ages = [x.age_seconds for x in snap.oldest]
    assert len(ages) == 50
    assert ages == sorted(ages, reverse=True)


def test_no_locks() -> None:
    snap = SnapshotBuilder().build(0, 0)
    assert (snap.active, snap.oldest, snap.oldest_age_seconds) == (0, (), 0.0)
