"""`lock-monitor backup sqlite` / `restore sqlite` on real SQLite files, through the CLI."""

from __future__ import annotations

import errno
import fcntl
import gzip
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from lock_monitor.backup.files import BackupError
from lock_monitor.backup.sqlite import SQLITE_HEADER, restore_sqlite
from tests.servers import (
    cli_error,
    cli_record,
    monitor_command,
    monitor_env,
    run_monitor,
    wait_for,
)

Rows = list[tuple[int, str, bytes]]


def make_db(path: Path, rows: int, journal_mode: str = "wal") -> Rows:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA journal_mode={journal_mode}")
        conn.execute("CREATE TABLE appointments (id INTEGER PRIMARY KEY, slot TEXT, note BLOB)")
        conn.execute("CREATE INDEX by_slot ON appointments (slot)")
        conn.executemany(
            "INSERT INTO appointments VALUES (?, ?, ?)",
            [
                (i, f"2026-03-{i % 28 + 1:02d}T09:{i % 60:02d}", bytes([i % 256]) * 300)
                for i in range(rows)
            ],
        )
        conn.commit()
    return read_rows(path)


def read_rows(path: Path) -> Rows:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT id, slot, note FROM appointments ORDER BY id").fetchall()


def integrity(path: Path) -> str:
    with closing(sqlite3.connect(path)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def backup_ok(db: Path, dest: Path, *args: str) -> Path:
    result = run_monitor("backup", "sqlite", "--db", str(db), "--dest", str(dest), *args)
    file = Path(cli_record(result, "sqlite_backup_written")["file"])
    assert file.parent == dest
    assert file.name.startswith("db-backup-")
    assert file.name.endswith("Z.db.gz")
    return file


def restore(
    backup: Path,
    db: Path,
    *args: str,
    env: dict[str, str] | None = None,
    file_size_limit: int | None = None,
) -> tuple[int, str]:
    result = run_monitor(
        "restore",
        "sqlite",
        str(backup),
        "--db",
        str(db),
        *args,
        env=env,
        file_size_limit=file_size_limit,
    )
    assert len(result.stderr.splitlines()) == 1, result.stderr
    return result.returncode, result.stderr.strip()


def fails(*args: str, **kwargs: object) -> str:
    return cli_error(run_monitor(*args, **kwargs))  # type: ignore[arg-type]


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    path = tmp_path / "backup"
    path.mkdir()
    return path


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_backup_wipe_restore_gives_back_every_row(
    tmp_path: Path, dest: Path, journal_mode: str
) -> None:
    db = tmp_path / "database.db"
    rows = make_db(db, 2000, journal_mode)
    file = backup_ok(db, dest)
    assert [p.name for p in dest.iterdir()] == [file.name]

    db.unlink()  # the wipe
    code, line = restore(file, db)
    assert code == 0, line
    record = json.loads(line)
    assert record["event"] == "sqlite_restored"
    assert record["file"] == str(db)
    assert record["previous"] == ""
    assert read_rows(db) == rows
    assert integrity(db) == "ok"


def test_restore_keeps_the_database_it_replaces(tmp_path: Path, dest: Path) -> None:
    db = tmp_path / "database.db"
    rows = make_db(db, 100)
    file = backup_ok(db, dest)
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("DELETE FROM appointments WHERE id < 50")
        conn.commit()
    damaged = read_rows(db)

    code, line = restore(file, db)
    assert code == 0, line
    previous = Path(json.loads(line)["previous"])
    assert previous.name.startswith("database.db.pre-restore-")
    assert read_rows(db) == rows
    assert read_rows(previous) == damaged
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["backup", "database.db", previous.name]
    )


@contextmanager
def busy_writer(db: Path) -> Iterator[threading.Event]:
    """Insert pairs of rows, one pair per transaction, hundreds a second. A millisecond between
    transactions, as an application leaves between requests: with none, a rollback-journal
    writer starves readers (its PENDING lock turns new SHARED locks away), and how long the
    backup waited for its turn, within its busy timeout, was luck."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with closing(sqlite3.connect(db, timeout=30)) as conn:
                while not stop.is_set():
                    with conn:
                        conn.execute("INSERT INTO appointments (slot, note) VALUES ('a', x'00')")
                        conn.execute("INSERT INTO appointments (slot, note) VALUES ('b', x'00')")
                    stop.wait(0.001)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(30)
    assert not errors


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_backup_while_a_writer_is_busy_is_consistent(
    tmp_path: Path, dest: Path, journal_mode: str
) -> None:
    db = tmp_path / "database.db"
    before = len(make_db(db, 20_000, journal_mode))  # an even number of rows
    with busy_writer(db):
        wait_for(lambda: len(read_rows(db)) > before + 100, timeout=10, what="writes")
        file = backup_ok(db, dest)
    after = len(read_rows(db))

    restored = tmp_path / "restored.db"
    code, line = restore(file, restored)
    assert code == 0, line
    assert integrity(restored) == "ok"
    count = len(read_rows(restored))
    assert before < count <= after
    assert count % 2 == 0  # never half a transaction


def test_retention_deletes_exactly_the_old_backups(tmp_path: Path, dest: Path) -> None:
    db = tmp_path / "database.db"
    make_db(db, 10)
    old = ["db-backup-20200101T023000Z.db.gz", "db-backup-20200102T023000Z.db.gz"]
    foreign = [
        "db-backup-20200101T023000Z.db.gz.bak",
        "db-backup-latest.db.gz",
        "redis-backup-20200101T020000Z.rdb",
        "notes.txt",
    ]
    for name in old + foreign:
        (dest / name).write_bytes(b"x")

    result = run_monitor("backup", "sqlite", "--db", str(db), "--dest", str(dest))
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stderr)
    assert sorted(record["deleted"]) == old
    assert sorted(p.name for p in dest.iterdir()) == sorted([*foreign, Path(record["file"]).name])


def corrupt_pages(db: Path) -> None:
    """Overwrite the middle of the file (b-tree pages; the header stays valid)."""
    data = bytearray(db.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8192] = b"\xa5" * 8192
    db.write_bytes(bytes(data))


def test_corrupt_source_is_refused_and_nothing_kept(tmp_path: Path, dest: Path) -> None:
    db = tmp_path / "database.db"
    make_db(db, 2000, "delete")
    corrupt_pages(db)
    line = fails("backup", "sqlite", "--db", str(db), "--dest", str(dest))
    assert "integrity_check" in line or "malformed" in line
    assert list(dest.iterdir()) == []


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path, dest: Path) -> None:
    db = tmp_path / "database.db"
    db.write_bytes(b"this is not SQLite\n" * 100)
    line = fails("backup", "sqlite", "--db", str(db), "--dest", str(dest))
    assert f"cannot copy {db}: file is not a database" in line
    assert list(dest.iterdir()) == []


def test_full_disk_fails_without_a_partial_file(tmp_path: Path, dest: Path) -> None:
    db = tmp_path / "database.db"
    make_db(db, 2000)
    line = fails(
        "backup", "sqlite", "--db", str(db), "--dest", str(dest), file_size_limit=64 * 1024
    )
    assert "full" in line or "too large" in line
    assert list(dest.iterdir()) == []


def damaged_backups(good: bytes) -> dict[str, bytes]:
    middle = len(good) // 2
    return {
        "truncated": good[: len(good) - 100],
        "corrupted": good[:middle] + bytes([good[middle] ^ 0xFF]) + good[middle + 1 :],
        "not gzip": b"plain text",
        "gzip of a non-database": gzip.compress(b"not a database" * 1000),
    }


def test_restore_refuses_a_damaged_backup_and_changes_nothing(tmp_path: Path, dest: Path) -> None:
    db = tmp_path / "database.db"
    make_db(db, 2000)
    good = backup_ok(db, dest).read_bytes()
    live = tmp_path / "live.db"
    make_db(live, 7)
    live_bytes = live.read_bytes()

    for case, content in damaged_backups(good).items():
        bad = tmp_path / f"{case}.db.gz"
        bad.write_bytes(content)
        code, line = restore(bad, live)
        assert code == 1, case
        assert line.startswith("lock-monitor: error: "), case
        assert "gzip" in line or "not a sound SQLite database" in line, (case, line)
        assert live.read_bytes() == live_bytes, case
        assert not list(tmp_path.glob("*.pre-restore-*")), case
        assert not list(tmp_path.glob(".*")), case  # no temp file left beside the database


def test_restore_refuses_while_the_database_has_a_wal(tmp_path: Path, dest: Path) -> None:
    db = tmp_path / "database.db"
    make_db(db, 10)
    file = backup_ok(db, dest)
    with closing(sqlite3.connect(db)) as writer:  # an open writer keeps database.db-wal
        writer.execute("INSERT INTO appointments (slot) VALUES ('x')")
        writer.commit()
        code, line = restore(file, db)
    assert code == 1
    assert "database.db-wal exists" in line


def empty_database(path: Path) -> Path:
    """A sound SQLite file with a header and no table."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
    assert path.read_bytes().startswith(SQLITE_HEADER)
    return path


def test_restore_refuses_empty_backups_and_changes_nothing(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    make_db(live, 7)
    live_bytes = live.read_bytes()
    drill = tmp_path / "drill.db"  # the README's restore drill: a scratch --db
    backups = tmp_path / "backups"
    backups.mkdir()
    cases = {
        "0-byte file": backups / "zero.db.gz",
        "gzip of nothing": backups / "nothing.db.gz",
        "gzip of a database with no table": backups / "no-table.db.gz",
        "/dev/null": Path("/dev/null"),
    }
    cases["0-byte file"].write_bytes(b"")
    cases["gzip of nothing"].write_bytes(gzip.compress(b""))
    cases["gzip of a database with no table"].write_bytes(
        gzip.compress(empty_database(tmp_path / "empty.db").read_bytes())
    )
    (tmp_path / "empty.db").unlink()

    for case, backup in cases.items():
        for db in (live, drill):
            code, line = restore(backup, db)
            assert code == 1, (case, line)
            assert line.startswith("lock-monitor: error: "), (case, line)
            assert "empty" in line, (case, line)
            assert live.read_bytes() == live_bytes, case
            assert not drill.exists(), case
            assert sorted(p.name for p in tmp_path.iterdir()) == ["backups", "live.db"], case


def test_backup_of_an_empty_database_is_refused(tmp_path: Path, dest: Path) -> None:
    zero = tmp_path / "zero.db"
    zero.write_bytes(b"")
    for db in (zero, empty_database(tmp_path / "no-table.db")):
        line = fails("backup", "sqlite", "--db", str(db), "--dest", str(dest))
        assert f"the copy of {db} is an empty SQLite database (no tables)" in line
        assert list(dest.iterdir()) == []


def gzip_bomb(path: Path, size: int) -> Path:
    """A small .db.gz with a valid SQLite header that decompresses to `size` bytes."""
    with gzip.open(path, "wb", compresslevel=1) as bomb:
        bomb.write(SQLITE_HEADER)
        for _ in range(size >> 20):
            bomb.write(bytes(1 << 20))
    return path


def test_restore_stops_decompressing_at_max_size(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    make_db(live, 7)
    live_bytes = live.read_bytes()
    bomb = gzip_bomb(tmp_path / "bomb.db.gz", 64 << 20)
    assert bomb.stat().st_size < 1 << 20

    # A write past the limit would fail with "File too large", not with the limit's message.
    by_option = restore(bomb, live, "--max-size", "1M", file_size_limit=1 << 20)
    by_env = restore(
        bomb, live, env=monitor_env(LOCK_MONITOR_MAX_SIZE="1m"), file_size_limit=1 << 20
    )
    for code, line in (by_option, by_env):
        assert code == 1, line
        assert f"{bomb} decompresses to more than {1 << 20} bytes, the --max-size limit" in line
        assert live.read_bytes() == live_bytes
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.db.gz", "live.db"]


def test_restore_limit_defaults_to_a_multiple_of_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("lock_monitor.backup.sqlite.RESTORE_MIN_MAX_SIZE", 1 << 20)  # a cheap bomb
    live = tmp_path / "live.db"
    make_db(live, 500)  # over 100 KiB: ten times that is over the 1 MiB floor
    limit = 10 * live.stat().st_size
    assert limit > 1 << 20
    with pytest.raises(BackupError, match=f"more than {limit} bytes"):
        restore_sqlite(gzip_bomb(tmp_path / "bomb.db.gz", 16 << 20), live)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another owner needs root")
def test_restore_as_root_keeps_the_owner_group_and_mode(tmp_path: Path, dest: Path) -> None:
    db = tmp_path / "database.db"
    rows = make_db(db, 100)
    os.chown(db, 10001, 10002)
    db.chmod(0o640)
    file = backup_ok(db, dest)

    code, line = restore(file, db)
    assert code == 0, line
    restored = db.stat()
    assert (restored.st_uid, restored.st_gid, restored.st_mode & 0o777) == (10001, 10002, 0o640)
    assert read_rows(db) == rows


def open_for_writing(fifo: Path) -> int | None:
    """The FIFO's write end once its reader has opened it."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no reader yet
            return None
        raise


@contextmanager
def killed_at_the_end(command: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[str]]:
    """The CLI started with `command`; killed when the block ends if it is still running."""
    process = subprocess.Popen(command, env=monitor_env(), text=True, **kwargs)
    try:
        yield process
    finally:
        process.kill()
        process.communicate()


@contextmanager
def restore_under_way(stream: Path, db: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """A restore reading `stream`, a FIFO (a backup arriving slowly), with part of a backup
    written to its temp file and waiting for more: the process and that temp file."""
    os.mkfifo(stream)
    command = monitor_command("restore", "sqlite", str(stream), "--db", str(db))
    with killed_at_the_end(command, stderr=subprocess.PIPE) as process:
        fd = wait_for(lambda: open_for_writing(stream), what="the restore to open its backup")
        with os.fdopen(fd, "wb") as writer:
            os.set_blocking(fd, True)
            compressor = zlib.compressobj(wbits=31)  # gzip
            # Incompressible, so that gzip's buffered reads of the stream get enough of it.
            writer.write(compressor.compress(SQLITE_HEADER + os.urandom(3 << 20)))
            writer.write(compressor.flush(zlib.Z_SYNC_FLUSH))
            writer.flush()
            (temp,) = wait_for(
                lambda: [p for p in db.parent.glob(f".{db.name}.*.tmp") if p.stat().st_size],
                what="the restore's temp file",
            )
            yield process, temp


def test_next_restore_removes_the_temp_file_of_a_killed_one(tmp_path: Path, dest: Path) -> None:
    db = tmp_path / "database.db"
    rows = make_db(db, 100)
    file = backup_ok(db, dest)
    with restore_under_way(tmp_path / "stream.db.gz", db) as (killed, temp):
        killed.send_signal(signal.SIGKILL)
        assert killed.wait(10) == -signal.SIGKILL
    assert temp.exists()  # what a SIGKILL leaves behind
    running = tmp_path / ".database.db.abcdefgh.tmp"  # a concurrent run's, still being written
    with running.open("wb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        code, line = restore(file, db)
        assert code == 0, line
        assert running.exists()
    assert not temp.exists()
    assert read_rows(db) == rows


STOPPED = "lock-monitor: error: stopped by SIGTERM; no unfinished file was kept\n"


def test_a_restore_stopped_by_sigterm_removes_its_temp_file(tmp_path: Path) -> None:
    db = tmp_path / "database.db"
    make_db(db, 100)
    before = db.read_bytes()
    with restore_under_way(tmp_path / "stream.db.gz", db) as (stopped, temp):
        stopped.send_signal(signal.SIGTERM)
        _, err = stopped.communicate(timeout=10)
    assert (stopped.returncode, err) == (1, STOPPED)
    assert not temp.exists()
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["database.db", "stream.db.gz"]


# The CLI, paused once it has compressed the first chunk of its copy: both its scratch database
# and its temp file exist, as in the middle of a large database's backup.
PAUSED_BACKUP = """
import sys

import lock_monitor.backup.sqlite as sqlite
from lock_monitor.cli import main

file_chunks = sqlite._file_chunks


def pausing(path):
    chunks = file_chunks(path)
    yield next(chunks)
    print("paused", flush=True)
    sys.stdin.readline()
    yield from chunks


sqlite._file_chunks = pausing
main()
"""


@contextmanager
def backup_under_way(db: Path, dest: Path) -> Iterator[tuple[subprocess.Popen[str], list[Path]]]:
    """`backup sqlite` paused in the middle: the process and the files it made in `dest`."""
    before = set(dest.iterdir())
    command = [sys.executable, "-c", PAUSED_BACKUP, "backup", "sqlite", "--db", str(db)]
    with killed_at_the_end(
        [*command, "--dest", str(dest)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stdout is not None
        assert process.stdout.readline() == "paused\n", process.communicate(timeout=10)
        files = sorted(set(dest.iterdir()) - before)
        assert [p.name.split("-")[0] for p in files] == [".db", ".scratch"]  # temp, scratch
        yield process, files


def test_a_backup_stopped_by_sigterm_leaves_nothing(tmp_path: Path, dest: Path) -> None:
    db = tmp_path / "database.db"
    make_db(db, 2000)
    with backup_under_way(db, dest) as (stopped, _):
        stopped.send_signal(signal.SIGTERM)  # as a Job past its activeDeadlineSeconds gets
        _, err = stopped.communicate(timeout=10)
    assert (stopped.returncode, err) == (1, STOPPED)
    assert list(dest.iterdir()) == []


def test_next_backup_removes_the_files_of_a_killed_one_and_no_running_ones(
    tmp_path: Path, dest: Path
) -> None:
    db = tmp_path / "database.db"
    rows = make_db(db, 2000)
    with backup_under_way(db, dest) as (killed, left):
        killed.send_signal(signal.SIGKILL)
        assert killed.wait(10) == -signal.SIGKILL
    assert all(path.exists() for path in left)  # what a SIGKILL leaves behind
    with backup_under_way(db, dest) as (_, in_use):
        assert not any(path.exists() for path in left)
        file = backup_ok(db, dest)  # meanwhile: the running backup's files are locked
    assert sorted(dest.iterdir()) == sorted([file, *in_use])
    assert read_rows_gz(file) == rows


CONCURRENT_BACKUP = """
import sys
from datetime import UTC, datetime

import lock_monitor.backup.sqlite
from lock_monitor.cli import main


class Fixed(datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime(2026, 3, 20, 2, 30, tzinfo=UTC)


lock_monitor.backup.sqlite.datetime = Fixed  # every run takes the same stamp
print("ready", flush=True)
sys.stdin.readline()
main()
"""


def test_concurrent_backups_into_one_directory_exactly_one_wins(tmp_path: Path, dest: Path) -> None:
    db = tmp_path / "database.db"
    make_db(db, 2000)
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CONCURRENT_BACKUP,
                "backup",
                "sqlite",
                "--db",
                str(db),
                "--dest",
                str(dest),
            ],
            env=monitor_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for run in runs:  # all imported and waiting
            assert run.stdout is not None
            assert run.stdout.readline() == "ready\n"
        for run in runs:  # then all at once
            assert run.stdin is not None
            run.stdin.write("go\n")
            run.stdin.flush()
        results = [(run.communicate(timeout=60)[1], run.returncode) for run in runs]
    finally:
        for run in runs:
            run.kill()
            run.wait()

    final = dest / "db-backup-20260320T023000Z.db.gz"
    winners = [err for err, code in results if code == 0]
    losers = [err for err, code in results if code != 0]
    assert len(winners) == 1, results
    assert json.loads(winners[0])["file"] == str(final)
    assert losers == [f"lock-monitor: error: {final} already exists\n"] * 3
    assert list(dest.iterdir()) == [final]
    assert len(read_rows_gz(final)) == 2000


def read_rows_gz(file: Path) -> Rows:
    copy = file.with_suffix("")
    copy.write_bytes(gzip.decompress(file.read_bytes()))
    try:
        return read_rows(copy)
    finally:
        copy.unlink()
