"""What every backup shares: stamped names, atomic writes, and retention by the stamp in the name.

A backup file appears under its final name only once it is complete, synced and checked: it is
written to a hidden temp file in the same directory, fsynced, moved into place, and the
directory fsynced. Any failure removes the temp file, so a crash or a full disk never leaves a
half-written backup that retention could later mistake for a good one. A run killed outright
cannot remove its temp and scratch files: the next backup into the same directory does,
recognising a dead run's files by their lock, which a running backup holds for as long as its
files exist.
"""

from __future__ import annotations

import fcntl
import os
import re
import stat
import tempfile
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from io import FileIO
from pathlib import Path

from lock_monitor.errors import OperatorError

STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
STAMP_PATTERN = r"(?P<stamp>\d{8}T\d{6}Z)"
CHUNK_SIZE = 1 << 20
TEMP_NAME = re.compile(r"\.(?P<final>.+)\.[a-z0-9_]{8}\.tmp")  # mkstemp's names beside the final
SCRATCH_PREFIX, SCRATCH_SUFFIX = ".scratch-", ".db"
SCRATCH_NAME = re.compile(rf"{re.escape(SCRATCH_PREFIX)}[a-z0-9_]{{8}}{re.escape(SCRATCH_SUFFIX)}")
SQLITE_SIDE_FILES = ("-journal", "-wal", "-shm")


class BackupError(OperatorError):
    """A backup or restore that failed; the message is one line for the operator."""


def os_failure(action: str, exc: OSError) -> BackupError:
    """`<action>: <the system's reason>`, without the errno and path that str(exc) repeats."""
    return BackupError(f"{action}: {exc.strerror or exc}")


@dataclass(frozen=True)
class BackupResult:
    """One finished backup (or restore), as logged in the command's one JSON line."""

    file: Path
    bytes: int
    seconds: float
    deleted: list[str] = field(default_factory=list)
    details: dict[str, object] = field(default_factory=dict)  # e.g. a Cluster primary's slots

    def log_fields(self) -> dict[str, object]:
        return {
            "file": str(self.file),
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "deleted": self.deleted,
            **self.details,
        }


def utc_stamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime(STAMP_FORMAT)


class PendingFile:
    """The temp file being written; a failed write (a full disk) names the file it was for."""

    def __init__(self, file: FileIO, path: Path, final: Path) -> None:
        self.file = file
        self.path = path
        self.final = final
        self.size = 0

    def write(self, data: bytes) -> int:
        """All of `data`: the unbuffered file may take only part of it (a disk filling up)."""
        left = memoryview(data).cast("B")
        total = len(left)
        while left:
            try:
                written = self.file.write(left)
            except OSError as exc:
                raise self.write_failed(exc) from None
            left = left[written:]
            self.size += written
        return total

    def flush(self) -> None:
        """Flush and fsync, so that what is checked next is what is on disk."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError as exc:
            raise self.write_failed(exc) from None

    def write_failed(self, exc: OSError) -> BackupError:
        return os_failure(f"cannot write {self.final}", exc)


@contextmanager
def atomic_file(final: Path, *, replace: bool = False) -> Iterator[PendingFile]:
    """Yield a temp file beside `final`; when the block ends without error, sync it into place.

    Without `replace`, an existing `final` is an error rather than silently overwritten: the
    file is linked into place, which fails if the name exists by then, so of concurrent runs
    writing the same name exactly one wins. The temp file stays locked while it exists, so
    that `remove_stale_temps` of another run never takes it for a dead run's.
    """
    if final.exists() and not replace:
        raise BackupError(f"{final} already exists")
    remove_stale_temps(final.parent, re.compile(re.escape(final.name)))
    fd, temp = _locked_temp(final.parent, prefix=f".{final.name}.", suffix=".tmp")
    # Unbuffered: each write reaches the file at once, so closing it has nothing left to write
    # that could fail a second time (a full disk) and hide the first error.
    with os.fdopen(fd, "wb", buffering=0) as file:
        try:
            pending = PendingFile(file, temp, final)
            yield pending
            pending.flush()
            try:
                if replace:
                    os.replace(temp, final)
                else:
                    os.link(temp, final)
                    temp.unlink()
                fsync_dir(final.parent)
            except FileExistsError:
                raise BackupError(f"{final} already exists") from None
            except OSError as exc:
                raise pending.write_failed(exc) from None
        finally:
            temp.unlink(missing_ok=True)  # before the lock goes with the file


def _locked_temp(directory: Path, prefix: str, suffix: str) -> tuple[int, Path]:
    """A new temp file in `directory`, created and then locked for as long as it is open."""
    while True:
        fd, path = _new_temp(directory, prefix, suffix)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _still_named(fd, path):
            return fd, path
        os.close(fd)  # another run's cleanup removed it before it was locked: make another


def _new_temp(directory: Path, prefix: str, suffix: str) -> tuple[int, Path]:
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=suffix)
    except OSError as exc:
        raise os_failure(f"cannot write in {directory}", exc) from None
    return fd, Path(name)


def _still_named(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), path.lstat())
    except FileNotFoundError:
        return False


def remove_stale_temps(directory: Path, *final_names: re.Pattern[str]) -> None:
    """Delete the temp files that runs killed while writing a file named by `final_names` left
    in `directory` (every stamp: each run writes a new name)."""

    def is_temp(name: str) -> bool:
        match = TEMP_NAME.fullmatch(name)
        return match is not None and any(final.fullmatch(match["final"]) for final in final_names)

    _remove_unlocked(directory, is_temp, side_files=())


def remove_stale_scratch(directory: Path) -> None:
    """Delete the scratch databases (and SQLite's files beside them) of killed runs."""
    _remove_unlocked(directory, SCRATCH_NAME.fullmatch, side_files=SQLITE_SIDE_FILES)


def _remove_unlocked(
    directory: Path, is_ours: Callable[[str], object], side_files: tuple[str, ...]
) -> None:
    """Delete the files of `directory` that `is_ours` names and no running backup holds locked.

    Only regular files are considered (never a symlink or a directory). A directory that cannot
    be read or written is left for the backup itself to report.
    """
    try:
        with os.scandir(directory) as entries:
            names = [entry.name for entry in entries if is_ours(entry.name)]
    except OSError:
        return
    for name in names:
        path = directory / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue  # gone meanwhile, a symlink, or not ours to open
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a run in progress
            if _still_named(fd, path):
                _unlink(path, side_files)
        finally:
            os.close(fd)


@contextmanager
def scratch_database(directory: Path) -> Iterator[Path]:
    """A temp SQLite file in `directory` (not /tmp: the root filesystem may be read-only),
    locked while in use so that `remove_stale_scratch` of another run leaves it alone."""
    fd, path = _locked_temp(directory, SCRATCH_PREFIX, SCRATCH_SUFFIX)
    try:
        yield path
    finally:
        _unlink(path, SQLITE_SIDE_FILES)
        os.close(fd)  # the lock goes once the files are gone


def _unlink(path: Path, side_files: tuple[str, ...]) -> None:
    """`path` and the files named after it; what cannot be removed is left for the next run."""
    for leftover in (path, *(Path(f"{path}{side}") for side in side_files)):
        with suppress(OSError):
            leftover.unlink()


def fsync_dir(directory: Path) -> None:
    """Make a rename durable: without this a power cut can forget the new name."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prune(
    directory: Path,
    pattern: re.Pattern[str],
    keep_days: int,
    now: datetime,
    current_series: Collection[str] = (),
) -> list[str]:
    """Delete the backups named by `pattern` whose stamp is older than `keep_days`.

    Only names the pattern matches fully are considered (other files are never touched), and
    the newest of them is kept whatever its age, so backups that failed for weeks never lead
    to deleting the last good one. A pattern with a `series` group (one series per Cluster
    primary) also keeps the newest file of each series in `current_series`; other series
    (gone after a resharding, or named the old way) age out like any other file.
    """
    backups: list[tuple[datetime, Path, str | None]] = []
    for path in directory.iterdir():
        match = pattern.fullmatch(path.name)
        if not match or not path.is_file():
            continue
        try:
            stamp = datetime.strptime(match["stamp"], STAMP_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            continue
        backups.append((stamp, path, match.groupdict().get("series")))
    backups.sort()
    newest_of_series = {series: path for _, path, series in backups if series in current_series}
    kept_whatever_age = {*newest_of_series.values(), *(path for _, path, _ in backups[-1:])}
    cutoff = now - timedelta(days=keep_days)
    deleted = []
    for stamp, path, _ in backups:
        if stamp < cutoff and path not in kept_whatever_age:
            with suppress(FileNotFoundError):
                path.unlink()
            deleted.append(path.name)
    return deleted
