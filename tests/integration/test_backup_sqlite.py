"""`lock-monitor backup sqlite` / `restore sqlite` on real SQLite files, through the CLI."""

from __future__ import annotations

import gzip
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from tests.servers import cli_error, cli_record, run_monitor, wait_for

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


def restore(backup: Path, db: Path) -> tuple[int, str]:
    result = run_monitor("restore", "sqlite", str(backup), "--db", str(db))
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
    """Insert pairs of rows, one pair per transaction, as fast as SQLite allows."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with closing(sqlite3.connect(db, timeout=30)) as conn:
                while not stop.is_set():
                    with conn:
                        conn.execute("INSERT INTO appointments (slot, note) VALUES ('a', x'00')")
                        conn.execute("INSERT INTO appointments (slot, note) VALUES ('b', x'00')")
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
