"""Pure backup logic: Redis' CRC-64, the RDB check, retention and the atomic write."""

from __future__ import annotations

import errno
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lock_monitor.backup import BackupError, atomic_file, prune
from lock_monitor.backup_redis import RdbCheck, crc64
from lock_monitor.backup_sqlite import NAME_PATTERN


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
