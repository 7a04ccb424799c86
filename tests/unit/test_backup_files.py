"""Atomic writes, temp files of dead runs, and retention by the stamp in the name."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import subprocess
import sys
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lock_monitor.backup.files import (
    BackupError,
    atomic_file,
    prune,
    remove_stale_scratch,
    remove_stale_temps,
    scratch_database,
)
from lock_monitor.backup.redis_rdb import CLUSTER_NAME, STANDALONE_NAME
from lock_monitor.backup.sqlite import NAME_PATTERN
from tests.servers import ROOT

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
            # What a concurrent run does first: this run's temp is locked, hence never stale.
            remove_stale_temps(tmp_path, re.compile(re.escape(final.name)))
            assert output.path.exists()

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


def test_a_backup_removes_every_file_killed_backups_left_and_nothing_else(tmp_path: Path) -> None:
    """Each run writes a new stamp: the files of a killed run are found by their pattern."""
    stale = [
        ".db-backup-20260101T023000Z.db.gz.k2_x9q0a.tmp",
        ".redis-backup-20260101T020000Z.rdb.abcdefgh.tmp",
        ".redis-backup-20260101T020000Z-slots-0-5460.rdb.abcdefgh.tmp",
        ".scratch-k2_x9q0a.db",
        ".scratch-k2_x9q0a.db-journal",  # SQLite's, beside the scratch database
    ]
    running = [".db-backup-20260320T023000Z.db.gz.abcdefgh.tmp", ".scratch-abcdefgh.db"]
    others = [
        ".scratch-abcdefgh.db-wal",  # the running scratch database's
        ".db-backup-latest.db.gz.abcdefgh.tmp",
        ".db-backup-20260101T023000Z.db.gz.ABCDEFGH.tmp",
        ".db-backup-20260101T023000Z.db.gz.abcdefgh.tmp.bak",
        ".database.db.abcdefgh.tmp",  # a restore's, beside the database it replaces
        "db-backup-20260101T023000Z.db.gz",
        ".scratch-abc.db",
        ".scratch-abcdefgh.sqlite",
        "scratch-abcdefgh.db",
        ".scratch-lonelyxx.db-journal",  # no scratch database: not known to be a dead run's
    ]
    for name in stale + running + others:
        (tmp_path / name).write_bytes(b"x")
    outside = tmp_path / "elsewhere"
    outside.write_bytes(b"not ours")
    (tmp_path / ".scratch-linkxxxx.db").symlink_to(outside)
    (tmp_path / ".db-backup-20260101T023000Z.db.gz.dirxxxxx.tmp").mkdir()

    with ExitStack() as held:
        for name in running:  # runs in progress hold their files locked
            fcntl.flock(held.enter_context((tmp_path / name).open("rb")), fcntl.LOCK_EX)
        remove_stale_temps(tmp_path, NAME_PATTERN, STANDALONE_NAME, CLUSTER_NAME)
        remove_stale_scratch(tmp_path)

    assert {p.name for p in tmp_path.iterdir()} == {
        *running,
        *others,
        "elsewhere",
        ".scratch-linkxxxx.db",
        ".db-backup-20260101T023000Z.db.gz.dirxxxxx.tmp",
    }
    assert outside.read_bytes() == b"not ours"


def test_a_scratch_database_is_locked_while_in_use_and_gone_after(tmp_path: Path) -> None:
    with scratch_database(tmp_path) as scratch:
        Path(f"{scratch}-journal").write_bytes(b"SQLite's")
        remove_stale_scratch(tmp_path)  # what a concurrent backup does first
        assert scratch.exists()
        assert Path(f"{scratch}-journal").exists()
    assert list(tmp_path.iterdir()) == []


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


@pytest.mark.parametrize("opens", [atomic_file, lambda path: scratch_database(path.parent)])
def test_a_directory_that_cannot_be_written_is_named(tmp_path: Path, opens) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(BackupError) as caught, opens(missing / "backup.bin"):
        pass
    assert str(caught.value) == f"cannot write in {missing}: No such file or directory"


# In a process whose files may not grow past LIMIT bytes (RLIMIT_FSIZE): a full disk as the
# writer sees it, where a write stops part way and the next one fails with EFBIG.
WRITE_PAST_THE_LIMIT = """
import resource, sys
from pathlib import Path
from lock_monitor.backup.files import BackupError, atomic_file

LIMIT = 1000
resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))
try:
    with atomic_file(Path(sys.argv[1])) as output:
        output.write(b"x" * 3 * LIMIT)  # fits any write buffer: fails when it reaches the disk
except BackupError as exc:
    print(exc)
"""


def test_a_file_past_the_size_limit_fails_with_one_error_every_time(tmp_path: Path) -> None:
    """Nothing is left to write when the file is closed: closing cannot fail a second time and
    hide the first error behind a traceback."""
    final = tmp_path / "backup.bin"
    result = subprocess.run(
        [sys.executable, "-c", WRITE_PAST_THE_LIMIT, str(final)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"cannot write {final}: File too large\n"
    assert list(tmp_path.iterdir()) == []
