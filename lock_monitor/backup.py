"""What every backup shares: stamped names, atomic writes, and retention by the stamp in the name.

A backup file appears under its final name only once it is complete, synced and checked: it is
written to a hidden temp file in the same directory, fsynced, renamed, and the directory fsynced.
Any failure removes the temp file, so a crash or a full disk never leaves a half-written backup
that retention could later mistake for a good one.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from lock_monitor.errors import OperatorError

STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
STAMP = r"(?P<stamp>\d{8}T\d{6}Z)"
CHUNK = 1 << 20


class BackupError(OperatorError):
    """A backup or restore that failed; the message is one line for the operator."""


@dataclass(frozen=True)
class Written:
    """One finished backup (or restore), as logged in the command's one JSON line."""

    file: Path
    bytes: int
    seconds: float
    deleted: list[str] = field(default_factory=list)
    details: dict[str, object] = field(default_factory=dict)  # e.g. a Cluster primary's slots

    def fields(self) -> dict[str, object]:
        return {
            "file": str(self.file),
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "deleted": self.deleted,
            **self.details,
        }


def utc_stamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime(STAMP_FORMAT)


class Output:
    """The temp file being written; a failed write (a full disk) names the file it was for."""

    def __init__(self, file: BinaryIO, path: Path, final: Path) -> None:
        self.file = file
        self.path = path
        self.final = final
        self.size = 0

    def write(self, data: bytes) -> int:
        try:
            written = self.file.write(data)
        except OSError as exc:
            raise BackupError(f"cannot write {self.final}: {exc.strerror or exc}") from None
        self.size += written
        return written

    def flush(self) -> None:
        """Flush and fsync, so that what is checked next is what is on disk."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError as exc:
            raise BackupError(f"cannot write {self.final}: {exc.strerror or exc}") from None


@contextmanager
def atomic_file(final: Path, *, replace: bool = False) -> Iterator[Output]:
    """Yield a temp file beside `final`; when the block ends without error, sync it into place.

    Without `replace`, an existing `final` is an error rather than silently overwritten.
    """
    if final.exists() and not replace:
        raise BackupError(f"{final} already exists")
    try:
        fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    except OSError as exc:
        raise BackupError(f"cannot write in {final.parent}: {exc.strerror or exc}") from None
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as file:
            output = Output(file, temp, final)
            yield output
            output.flush()
        try:
            os.replace(temp, final)
            fsync_dir(final.parent)
        except OSError as exc:
            raise BackupError(f"cannot write {final}: {exc.strerror or exc}") from None
    finally:
        temp.unlink(missing_ok=True)


@contextmanager
def scratch_path(directory: Path, suffix: str) -> Iterator[Path]:
    """A temp file name in `directory` (not /tmp: the root filesystem may be read-only)."""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".scratch-", suffix=suffix)
    except OSError as exc:
        raise BackupError(f"cannot write in {directory}: {exc.strerror or exc}") from None
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        for leftover in (path, *(Path(f"{path}{side}") for side in ("-journal", "-wal", "-shm"))):
            leftover.unlink(missing_ok=True)


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
    current: Collection[str] = (),
) -> list[str]:
    """Delete the backups named by `pattern` whose stamp is older than `keep_days`.

    Only names the pattern matches fully are considered (other files are never touched), and
    the newest of them is kept whatever its age, so backups that failed for weeks never lead
    to deleting the last good one. A pattern with a `series` group (one series per Cluster
    primary) also keeps the newest file of each series in `current`; series not in `current`
    (gone after a resharding, or named the old way) age out like any other file.
    """
    found: list[tuple[datetime, Path, str | None]] = []
    for path in directory.iterdir():
        match = pattern.fullmatch(path.name)
        if not match or not path.is_file():
            continue
        try:
            stamp = datetime.strptime(match["stamp"], STAMP_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            continue
        found.append((stamp, path, match.groupdict().get("series")))
    found.sort()
    newest = {series: path for _, path, series in found if series in current}
    keep = {*newest.values(), *(path for _, path, _ in found[-1:])}
    cutoff = now - timedelta(days=keep_days)
    deleted = []
    for stamp, path, _ in found:
        if stamp < cutoff and path not in keep:
            with suppress(FileNotFoundError):
                path.unlink()
            deleted.append(path.name)
    return deleted
