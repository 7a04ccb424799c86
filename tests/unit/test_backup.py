"""Pure backup logic: Redis' CRC-64, the RDB check, retention and the atomic write."""

from __future__ import annotations

import errno
import fcntl
import os
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from redis.cluster import ClusterNode, RedisCluster

from lock_monitor.backup import BackupError, atomic_file, prune, remove_stale_temps
from lock_monitor.backup_redis import (
    CLUSTER_NAME,
    RdbCheck,
    crc64,
    describe,
    primary_slots,
    series_name,
    slot_ranges,
)
from lock_monitor.backup_sqlite import NAME_PATTERN, default_max_size


def rdb(body: bytes = b"\xfe\x00\xfb\x01\x00\x00\x01k\x01v", checksum: int | None = None) -> bytes:
    """A minimal RDB: header, a body, the EOF opcode and the CRC-64 of all of it."""
    data = b"REDIS0011" + body + b"\xff"
    crc = crc64(data) if checksum is None else checksum
    return data + crc.to_bytes(8, "little")


def check(data: bytes, chunk: int) -> RdbCheck:
    checker = RdbCheck()
    for start in range(0, len(data), chunk):
        checker.update(data[start : start + chunk])
    checker.verify()
    return checker


def test_crc64_is_redis_jones_variant() -> None:
    assert crc64(b"123456789") == 0xE9C6D914C4B8D9CA
    assert crc64(b"456789", crc64(b"123")) == 0xE9C6D914C4B8D9CA


@pytest.mark.parametrize("chunk", [1, 3, 8, 9, 1000])
def test_rdb_check_accepts_a_sound_file_however_it_is_split(chunk: int) -> None:
    data = rdb()
    checker = check(data, chunk)
    assert checker.head == b"REDIS0011"
    assert checker.last == 0xFF  # the EOF opcode, just before the trailer
    assert checker.crc == crc64(data[:-8])  # everything but the trailer, chunking aside
    assert checker.tail == data[-8:]


def test_rdb_check_accepts_zero_checksum_of_rdbchecksum_no() -> None:
    data = rdb(checksum=0)
    checker = check(data, 4)
    assert checker.tail == bytes(8)
    assert checker.crc == crc64(data[:-8]) != 0  # computed all the same, then not compared


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"RDB" + rdb()[3:], "does not start with REDIS"),
        (rdb()[:-1], "truncated"),
        (rdb()[:-9], "truncated"),
        (rdb()[:12] + b"\x00" + rdb()[13:], "checksum"),
        (rdb(checksum=1), "checksum"),
        (b"", "does not start with REDIS"),
    ],
)
def test_rdb_check_refuses_damaged_files(data: bytes, message: str) -> None:
    with pytest.raises(BackupError, match=message):
        check(data, 5)


NOW = datetime(2026, 3, 20, 2, 30, tzinfo=UTC)


def test_prune_deletes_only_old_files_of_its_own_naming(tmp_path: Path) -> None:
    names = {
        "db-backup-20260301T023000Z.db.gz": True,  # 19 days old
        "db-backup-20260305T235959Z.db.gz": True,  # just over 14 days
        "db-backup-20260306T030000Z.db.gz": False,  # just under 14 days
        "db-backup-20260320T023000Z.db.gz": False,  # today's
        "db-backup-20200101T000000Z.db.gz.bak": False,  # not this tool's naming
        "db-backup-20200101T000000Z.db": False,
        "my-db-backup-20200101T000000Z.db.gz": False,
        "db-backup-20201301T000000Z.db.gz": False,  # month 13: not a stamp
        "redis-backup-20200101T000000Z.rdb": False,  # the other job's files
        "notes.txt": False,
    }
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "db-backup-20200102T000000Z.db.gz").mkdir()  # a directory is never deleted

    deleted = prune(tmp_path, NAME_PATTERN, 14, NOW)

    assert sorted(deleted) == sorted(name for name, old in names.items() if old)
    left = {path.name for path in tmp_path.iterdir()}
    assert left == {name for name, old in names.items() if not old} | {
        "db-backup-20200102T000000Z.db.gz"
    }


def test_prune_keeps_the_newest_even_when_it_is_old(tmp_path: Path) -> None:
    for name in ("db-backup-20250101T000000Z.db.gz", "db-backup-20250102T000000Z.db.gz"):
        (tmp_path / name).write_bytes(b"x")
    assert prune(tmp_path, NAME_PATTERN, 7, NOW) == ["db-backup-20250101T000000Z.db.gz"]
    assert [p.name for p in tmp_path.iterdir()] == ["db-backup-20250102T000000Z.db.gz"]


def test_atomic_file_appears_complete_or_not_at_all(tmp_path: Path) -> None:
    final = tmp_path / "backup.bin"

    def source_breaks() -> None:
        with atomic_file(final) as output:
            output.write(b"half")
            raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError):
        source_breaks()
    assert list(tmp_path.iterdir()) == []

    with atomic_file(final) as output:
        output.write(b"whole")
    assert final.read_bytes() == b"whole"
    assert list(tmp_path.iterdir()) == [final]
    with pytest.raises(BackupError, match="already exists"), atomic_file(final):
        pass
    assert final.read_bytes() == b"whole"


def test_atomic_file_never_overwrites_a_file_that_appeared_meanwhile(tmp_path: Path) -> None:
    """Two runs writing one name: the one finishing second fails instead of overwriting."""
    final = tmp_path / "backup.bin"

    def another_run_finishes_first() -> None:
        with atomic_file(final) as output:
            output.write(b"second")
            final.write_bytes(b"first")  # a concurrent run, after the check at the start

    with pytest.raises(BackupError) as caught:
        another_run_finishes_first()
    assert str(caught.value) == f"{final} already exists"
    assert final.read_bytes() == b"first"
    assert list(tmp_path.iterdir()) == [final]


def test_temp_files_of_dead_runs_are_removed_and_nothing_else(tmp_path: Path) -> None:
    final = tmp_path / "database.db"
    stale = tmp_path / ".database.db.k2_x9q0a.tmp"  # mkstemp's naming; its run was killed
    stale.write_bytes(b"half a restore")
    running = tmp_path / ".database.db.abcdefgh.tmp"  # a run in progress holds its lock
    running.write_bytes(b"being written")
    outside = tmp_path / "elsewhere"
    outside.write_bytes(b"not ours")
    others = [
        ".database.db.tmp",
        ".database.db.abc.tmp",
        ".database.db.ABCDEFGH.tmp",
        ".other.db.abcdefgh.tmp",
        "database.db.abcdefgh.tmp",
        ".database.db.abcdefgh.tmp.bak",
    ]
    for name in others:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".database.db.linkxxxx.tmp").symlink_to(outside)
    (tmp_path / ".database.db.dirxxxxx.tmp").mkdir()

    with running.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with atomic_file(final, replace=True) as output:
            output.write(b"restored")
            remove_stale_temps(final)  # what a concurrent run does first
            assert output.path.exists()  # this run's temp is locked, hence never taken for stale

    assert final.read_bytes() == b"restored"
    assert not stale.exists()
    assert running.read_bytes() == b"being written"
    assert outside.read_bytes() == b"not ours"
    assert {p.name for p in tmp_path.iterdir()} == {
        "database.db",
        running.name,
        "elsewhere",
        ".database.db.linkxxxx.tmp",
        ".database.db.dirxxxxx.tmp",
        *others,
    }


def test_restore_limit_defaults_to_ten_times_the_database_at_least_1g(tmp_path: Path) -> None:
    db = tmp_path / "database.db"
    assert default_max_size(db) == 1 << 30  # no database yet
    db.write_bytes(b"x" * 4096)
    assert default_max_size(db) == 1 << 30
    with db.open("r+b") as file:
        file.truncate(300 << 20)  # sparse: the size without the disk space
    assert default_max_size(db) == 3000 << 20


class FullDisk:
    """A file whose writes fail as they do on a full disk (ENOSPC)."""

    def __init__(self, real: object) -> None:
        self.real = real

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_names_the_file_and_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "backup.bin"

    def disk_fills_up() -> None:
        with atomic_file(final) as output:
            output.write(b"fits")
            output.file = FullDisk(output.file)  # type: ignore[assignment]
            output.write(b"does not fit")

    with pytest.raises(BackupError) as caught:
        disk_fills_up()
    assert str(caught.value) == f"cannot write {final}: No space left on device"
    assert list(tmp_path.iterdir()) == []


# --- Redis Cluster: one series per primary, named by its slots ---------------------------


def cluster_client(slots: dict[int, list[str]]) -> RedisCluster:
    """Stands in for a RedisCluster: only its slot table (slot -> [primary, replicas...])."""
    table = {
        slot: [ClusterNode(*name.split(":")) for name in names] for slot, names in slots.items()
    }
    return SimpleNamespace(nodes_manager=SimpleNamespace(slots_cache=table))  # type: ignore[return-value]


def test_slot_ranges_are_sorted_runs() -> None:
    assert slot_ranges([7, 2, 0, 1, 9, 8]) == [(0, 2), (7, 9)]
    assert slot_ranges([5]) == [(5, 5)]


def test_series_follow_the_slots_not_the_address() -> None:
    layout = {slot: ["10.0.0.1:6379", "10.0.0.4:6379"] for slot in range(0, 5461)}
    layout |= {slot: ["10.0.0.2:6379"] for slot in range(5461, 10923)}
    layout |= {slot: ["10.0.0.3:6379"] for slot in (*range(10923, 12000), *range(14000, 16384))}
    before = primary_slots(cluster_client(layout))
    assert {name: series_name(r) for name, r in before.items()} == {
        "10.0.0.1:6379": "slots-0-5460",
        "10.0.0.2:6379": "slots-5461-10922",
        "10.0.0.3:6379": "slots-10923-11999",
    }
    assert describe(before["10.0.0.3:6379"]) == "10923-11999,14000-16383"

    # 10.0.0.1 fails; its replica is promoted (and the pod comes back with a new IP as replica).
    layout |= {slot: ["10.0.0.4:6379", "10.0.0.9:6379"] for slot in range(0, 5461)}
    after = primary_slots(cluster_client(layout))
    assert series_name(after["10.0.0.4:6379"]) == series_name(before["10.0.0.1:6379"])
    assert "10.0.0.1:6379" not in after


def test_cluster_retention_ages_out_vanished_series_and_keeps_each_current_newest(
    tmp_path: Path,
) -> None:
    names = {
        "redis-backup-20260320T020000Z-slots-0-5460.rdb": False,  # this run's
        "redis-backup-20260319T020000Z-slots-0-5460.rdb": False,  # within 7 days
        "redis-backup-20260301T020000Z-slots-0-5460.rdb": True,  # old, not its newest
        "redis-backup-20260301T020000Z-slots-5461-10922.rdb": False,  # old, newest of a current
        "redis-backup-20260228T020000Z-slots-5461-10922.rdb": True,
        "redis-backup-20260310T020000Z-slots-10923-16383.rdb": True,  # a series resharded away
        "redis-backup-20260315T020000Z-slots-10923-16383.rdb": False,  # ... within 7 days
        "redis-backup-20260301T020000Z-10.0.0.3_6379.rdb": True,  # the earlier host_port naming
        "redis-backup-20260301T020000Z-redis_cluster_0.svc_6379.rdb": True,
        "redis-backup-20200101T000000Z.rdb": False,  # standalone naming: not this pattern
        "redis-backup-20200101T000000Z-manual.rdb": False,  # not this tool's naming
        "redis-backup-20200101T000000Z-slots-1.rdb": False,
    }
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    current = {"slots-0-5460", "slots-5461-10922"}

    deleted = prune(tmp_path, CLUSTER_NAME, 7, NOW, current)

    assert sorted(deleted) == sorted(name for name, old in names.items() if old)
    assert {p.name for p in tmp_path.iterdir()} == {n for n, old in names.items() if not old}


def test_cluster_retention_never_deletes_the_newest_file_overall(tmp_path: Path) -> None:
    """Backups failing for weeks after a resharding: the last good file stays."""
    for name in (
        "redis-backup-20250101T000000Z-slots-0-16383.rdb",
        "redis-backup-20250102T000000Z-slots-0-8191.rdb",
    ):
        (tmp_path / name).write_bytes(b"x")
    assert prune(tmp_path, CLUSTER_NAME, 7, NOW, {"slots-8192-16383"}) == [
        "redis-backup-20250101T000000Z-slots-0-16383.rdb"
    ]
