"""`lock-monitor backup` and `restore`, run by the CronJobs redis-backup and db-backup.

The backup code is imported inside each command: `run` never loads it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import structlog

from lock_monitor import logs
from lock_monitor.cli.options import EXISTING_FILE, F, option, redis_options, redis_settings

if TYPE_CHECKING:
    from lock_monitor.backup import Written


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
            default="/backup",
            help="Directory that keeps the backups.",
        )(command)

    return decorate


def _report(event: str, written: Written, **extra: object) -> None:
    structlog.get_logger("lock_monitor").info(event, **written.fields(), **extra)


@click.group()
def backup() -> None:
    """Take a backup into --dest; success is one JSON line on stderr."""
    logs.configure("info", "json")


@backup.command("redis")
@redis_options
@backup_options(keep_days=7)
def backup_redis_command(dest: Path, keep_days: int, **params: Any) -> None:
    """Fetch Redis' RDB as a replica does (no SAVE): DEST/redis-backup-<UTC stamp>.rdb."""
    from lock_monitor.backup_redis import backup_redis
    from lock_monitor.connection import connect

    target = connect(redis_settings(params))
    try:
        for written in backup_redis(target, dest, keep_days):
            _report("redis_backup_written", written)
    finally:
        target.close()


@backup.command("sqlite")
@option("--db", type=EXISTING_FILE, required=True, help="The SQLite database to back up.")
@backup_options(keep_days=14)
def backup_sqlite_command(db: str, dest: Path, keep_days: int) -> None:
    """Copy the database online, check and gzip it: DEST/db-backup-<UTC stamp>.db.gz."""
    from lock_monitor.backup_sqlite import backup_sqlite

    _report("sqlite_backup_written", backup_sqlite(Path(db), dest, keep_days))


@click.group()
def restore() -> None:
    """Restore a backup; success is one JSON line on stderr."""
    logs.configure("info", "json")


@restore.command("sqlite")
@click.argument("backup_file", type=EXISTING_FILE)
@option(
    "--db",
    type=click.Path(dir_okay=False),
    required=True,
    help="The database to replace (its writers must be stopped).",
)
def restore_sqlite_command(backup_file: str, db: str) -> None:
    """Check BACKUP_FILE (.db.gz) and put it in place of --db, keeping the old file."""
    from lock_monitor.backup_sqlite import restore_sqlite

    written, previous = restore_sqlite(Path(backup_file), Path(db))
    _report("sqlite_restored", written, source=backup_file, previous=str(previous or ""))
