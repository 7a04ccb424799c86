"""`lock-monitor backup` and `restore`, run by the CronJobs redis-backup and db-backup.

The backup code is imported inside each command: `run` never loads it.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click
import structlog

from lock_monitor import logs
from lock_monitor.cli.options import F, option, redis_options, redis_settings
from lock_monitor.cli.validation import EXISTING_FILE
from lock_monitor.config import (
    DEFAULT_BACKUP_DIR,
    DEFAULT_REDIS_BACKUP_KEEP_DAYS,
    DEFAULT_SQLITE_BACKUP_KEEP_DAYS,
    RESTORE_MAX_SIZE_FACTOR,
    RESTORE_MIN_MAX_SIZE,
)
from lock_monitor.errors import OperatorError

if TYPE_CHECKING:
    from lock_monitor.backup.files import BackupResult


def backup_options(keep_days: int) -> Callable[[F], F]:
    """Where backups go and how long they stay."""

    def decorate(command: F) -> F:
        command = option(
            "--keep-days",
            type=click.IntRange(min=1),
            default=keep_days,
            help="Delete this tool's backups older than this (never the newest).",
        )(command)
        return option(
            "--dest",
            type=click.Path(file_okay=False, exists=True, writable=True, path_type=Path),
            default=DEFAULT_BACKUP_DIR,
            help="Directory that keeps the backups.",
        )(command)

    return decorate


def _log_success(event: str, result: BackupResult, **extra: object) -> None:
    structlog.get_logger("lock_monitor").info(event, **result.log_fields(), **extra)


def _stop_on_sigterm() -> None:
    """SIGTERM (a Job's deadline, a deleted pod) raises, so that the `finally` blocks remove
    the unfinished files and the command fails with one line; killed outright, it would leave
    them behind (and as PID 1 in a container, SIGTERM would be ignored until the SIGKILL)."""

    def stop(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup
        raise OperatorError("stopped by SIGTERM; no unfinished file was kept")

    previous = signal.signal(signal.SIGTERM, stop)
    click.get_current_context().call_on_close(lambda: signal.signal(signal.SIGTERM, previous))


@click.group()
def backup() -> None:
    """Take a backup into --dest; success is one JSON line on stderr."""
    logs.configure("info", "json")
    _stop_on_sigterm()


@backup.command("redis")
@redis_options
@backup_options(keep_days=DEFAULT_REDIS_BACKUP_KEEP_DAYS)
def backup_redis_command(dest: Path, keep_days: int, **params: Any) -> None:
    """Fetch Redis' RDB as a replica does (no SAVE): DEST/redis-backup-<UTC stamp>.rdb."""
    from lock_monitor.backup.redis_rdb import backup_redis
    from lock_monitor.connection import connect

    target = connect(redis_settings(params))
    try:
        for result in backup_redis(target, dest, keep_days):
            _log_success("redis_backup_written", result)
    finally:
        target.close()


@backup.command("sqlite")
@option("--db", type=EXISTING_FILE, required=True, help="The SQLite database to back up.")
@backup_options(keep_days=DEFAULT_SQLITE_BACKUP_KEEP_DAYS)
def backup_sqlite_command(db: str, dest: Path, keep_days: int) -> None:
    """Copy the database online, check and gzip it: DEST/db-backup-<UTC stamp>.db.gz."""
    from lock_monitor.backup.sqlite import backup_sqlite

    _log_success("sqlite_backup_written", backup_sqlite(Path(db), dest, keep_days))


@click.group()
def restore() -> None:
    """Restore a backup; success is one JSON line on stderr."""
    logs.configure("info", "json")
    _stop_on_sigterm()


SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _byte_size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """A number of bytes, optionally with a K, M, G or T suffix (powers of 1024)."""
    if value is None:
        return None
    match = re.fullmatch(r"(\d+)([KMGT]?)", value.strip().upper())
    if not match or int(match[1]) == 0:
        raise click.BadParameter(f"{value!r} is not a size in bytes, such as 5000000, 800M or 20G")
    return int(match[1]) * SIZE_UNITS[match[2]]


@restore.command("sqlite")
@click.argument("backup_file", type=EXISTING_FILE)
@option(
    "--db",
    type=click.Path(dir_okay=False),
    required=True,
    help="The database to replace (its writers must be stopped).",
)
@option(
    "--max-size",
    callback=_byte_size,
    metavar="SIZE",
    help="Refuse a backup that decompresses to more than this (bytes, or with a K/M/G/T "
    f"suffix). Default: {RESTORE_MAX_SIZE_FACTOR} times the size of --db, at least "
    f"{RESTORE_MIN_MAX_SIZE >> 30}G.",
)
def restore_sqlite_command(backup_file: str, db: str, max_size: int | None) -> None:
    """Check BACKUP_FILE (.db.gz) and put it in place of --db, keeping the old file."""
    from lock_monitor.backup.sqlite import restore_sqlite

    result, previous = restore_sqlite(Path(backup_file), Path(db), max_size)
    _log_success("sqlite_restored", result, source=backup_file, previous=str(previous or ""))
