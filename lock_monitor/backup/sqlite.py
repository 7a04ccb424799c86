"""SQLite backups and restores for the backend's database.

The copy is made with SQLite's online backup API in one step: it reads one consistent
snapshot while the backend keeps writing (in WAL mode writers are not blocked at all; in
rollback-journal mode they wait for the copy, up to their busy timeout). The copy must pass
`PRAGMA integrity_check` and hold at least one table before it is compressed, and the
compressed file must decompress to exactly the copy before it gets its final name. A restore
applies the same checks before the database is replaced, after checking the SQLite header on
the first decompressed bytes and never decompressing more than a size limit.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import os
import re
import sqlite3
import stat
import time
import zlib
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from lock_monitor.backup.files import (
    CHUNK_SIZE,
    STAMP_PATTERN,
    BackupError,
    BackupResult,
    atomic_file,
    os_failure,
    prune,
    remove_stale_scratch,
    remove_stale_temps,
    scratch_database,
    utc_stamp,
)
from lock_monitor.config import RESTORE_MAX_SIZE_FACTOR, RESTORE_MIN_MAX_SIZE

NAME_PATTERN = re.compile(rf"db-backup-{STAMP_PATTERN}\.db\.gz")
BUSY_TIMEOUT = 30.0  # seconds to wait for the backend's write transaction to finish
SQLITE_HEADER = b"SQLite format 3\x00"


def _online_copy(db: Path, copy: Path) -> None:
    """A consistent copy of `db`, read-only on the source (a backup never writes to it)."""
    try:
        source = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
        with closing(source), closing(sqlite3.connect(copy)) as target:
            source.backup(target)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy {db}: {exc}") from None


def check_integrity(path: Path, name_in_errors: str) -> None:
    """`PRAGMA integrity_check` must answer exactly `ok`, and there must be a table: SQLite
    finds an empty file perfectly sound, and an empty backup would replace a database with
    nothing."""
    try:
        with closing(sqlite3.connect(path)) as conn:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
            tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'")
            (table_count,) = tables.fetchone()
    except sqlite3.Error as exc:
        raise BackupError(f"{name_in_errors} is not a sound SQLite database: {exc}") from None
    if rows != [("ok",)]:
        problems = [
            line for (row,) in rows for line in str(row).splitlines() if not line.startswith("***")
        ] or ["no answer"]
        raise BackupError(
            f"{name_in_errors} fails integrity_check: {problems[0]} ({len(problems)} problems)"
        )
    if not table_count:
        raise BackupError(f"{name_in_errors} is an empty SQLite database (no tables)")


def gunzip_chunks(path: Path) -> Iterator[bytes]:
    """The decompressed content; a truncated or damaged file is an error, not a short result."""
    try:
        with gzip.open(path, "rb") as compressed:
            while chunk := compressed.read(CHUNK_SIZE):
                yield chunk
    except (OSError, EOFError, zlib.error) as exc:
        raise BackupError(f"{path} is not a complete gzip file: {exc}") from None


def _sha256(chunks: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_SIZE):
            yield chunk


def backup_sqlite(db: Path, dest: Path, keep_days: int) -> BackupResult:
    """Copy, check, compress and keep `db` as DEST/db-backup-<stamp>.db.gz; then retention."""
    started = time.monotonic()
    now = datetime.now(UTC)
    final = dest / f"db-backup-{utc_stamp(now)}.db.gz"
    remove_stale_temps(dest, NAME_PATTERN)
    remove_stale_scratch(dest)
    with scratch_database(dest) as copy:
        _online_copy(db, copy)
        check_integrity(copy, f"the copy of {db}")
        with atomic_file(final) as pending:
            # mtime=0 and no file name in the header: the same database gives the same bytes.
            with gzip.GzipFile(filename="", mode="wb", fileobj=pending, mtime=0) as compressed:
                for chunk in _file_chunks(copy):
                    compressed.write(chunk)
            pending.flush()
            if _sha256(gunzip_chunks(pending.path)) != _sha256(_file_chunks(copy)):
                raise BackupError(f"{final} does not decompress to the copy it was made from")
    deleted = prune(dest, NAME_PATTERN, keep_days, now)
    return BackupResult(final, final.stat().st_size, time.monotonic() - started, deleted)


def default_max_size(db: Path) -> int:
    """How much a restore over `db` may decompress when no limit is given."""
    try:
        size = db.stat().st_size
    except OSError:
        size = 0
    return max(RESTORE_MAX_SIZE_FACTOR * size, RESTORE_MIN_MAX_SIZE)


def restore_sqlite(
    backup: Path, db: Path, max_size: int | None = None
) -> tuple[BackupResult, Path | None]:
    """Replace `db` with the checked content of `backup`; keep the old file beside it.

    Returns what was written and where the replaced database was kept (None if there was
    none). The database's writers must be stopped: a file replaced under an open connection
    would keep receiving its writes, and a leftover -wal or hot -journal would be replayed
    into the restored file, so their presence is refused. A backup decompressing to more than
    `max_size` bytes (default: `default_max_size`) is refused before more is written. The
    restored file gets the replaced one's permissions, and as root its owner and group too,
    so the backend can still open it.
    """
    started = time.monotonic()
    limit = default_max_size(db) if max_size is None else max_size
    for side in ("-wal", "-journal"):
        leftover = Path(f"{db}{side}")
        if leftover.exists() and leftover.stat().st_size > 0:
            raise BackupError(
                f"{leftover} exists: the database is in use or was not closed cleanly; "
                "stop its writers (and let SQLite recover it) before restoring"
            )
    chunks = gunzip_chunks(backup)
    first = next(chunks, b"")
    if not first:
        raise BackupError(f"{backup} is empty: there is no database in it")
    if not first.startswith(SQLITE_HEADER):
        raise BackupError(f"{backup} is not a sound SQLite database: no SQLite header")
    previous = Path(f"{db}.pre-restore-{utc_stamp(datetime.now(UTC))}") if db.exists() else None
    with atomic_file(db, replace=True) as pending:
        for chunk in itertools.chain([first], chunks):
            if pending.size + len(chunk) > limit:
                raise BackupError(
                    f"{backup} decompresses to more than {limit} bytes, the --max-size limit"
                )
            pending.write(chunk)
        pending.flush()
        check_integrity(pending.path, str(backup))
        if previous is not None:
            old = db.stat()
            try:
                os.chmod(pending.path, stat.S_IMODE(old.st_mode))
                if os.geteuid() == 0:
                    os.chown(pending.path, old.st_uid, old.st_gid)
            except OSError as exc:
                raise os_failure(f"cannot give {db}'s owner and mode", exc) from None
            try:
                os.link(db, previous)  # the old bytes under a second name: instant, no copy
            except OSError as exc:
                raise os_failure(f"cannot keep {db} as {previous}", exc) from None
    return BackupResult(db, pending.size, time.monotonic() - started), previous
