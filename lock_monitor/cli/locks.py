"""`lock-monitor locks`: one pass now, printed for a person or a script.

Only what is printed is kept: the oldest few locks and the counts, or with `--all` nothing
at all, each lock being written as it is read. So a million locks cost no more memory than
a hundred.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import click

from lock_monitor import logs
from lock_monitor.cli.options import redis_options, redis_settings, scan_options, scan_settings
from lock_monitor.config import RedisSettings, ScanSettings
from lock_monitor.connection import connect
from lock_monitor.errors import OperatorError
from lock_monitor.locks import Lock, LockTracker
from lock_monitor.monitor import MonitorState
from lock_monitor.passes import PassFailed, PassResult, describe_error, read_pass
from lock_monitor.stuck_log import StuckMemory
from lock_monitor.views import lock_table, status_document

SHOWN = 100  # locks printed by default: the oldest


def read_once(
    redis: RedisSettings,
    scan: ScanSettings,
    keep_oldest: int,
    each: Callable[[Sequence[Lock]], None] | None = None,
) -> PassResult:
    """One pass on a fresh connection; failing to connect fails the pass."""
    try:
        target = connect(redis)  # a cluster reads its topology from the seed here
    except Exception as exc:
        raise PassFailed({redis.target(): describe_error(exc, redis)}) from None
    try:
        tracker = LockTracker(scan.stuck_threshold, remember=False)
        return read_pass(target, scan, tracker, StuckMemory(), keep_oldest, each)
    finally:
        target.close()


def json_lines(stuck_only: bool) -> Callable[[Sequence[Lock]], None]:
    """Writes each lock handed over as one JSON line, a page at a time."""

    def write(locks: Sequence[Lock]) -> None:
        lines = [json.dumps(lock._asdict()) for lock in locks if lock.stuck or not stuck_only]
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")

    return write


@click.command()
@redis_options
@scan_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--stuck", "stuck_only", is_flag=True, help="Only the stuck locks.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=None,
    help=f"Print the oldest N locks (default {SHOWN}); the counts cover every lock.",
)
@click.option(
    "--all",
    "every",
    is_flag=True,
    help="Print every lock as a JSON line as it is read, unsorted, without counts.",
)
def locks(as_json: bool, stuck_only: bool, limit: int | None, every: bool, **params: Any) -> None:
    """Read the locks once now and print the oldest, with the counts of all of them."""
    logs.configure("warning", "auto")
    if every and limit is not None:
        raise click.UsageError("--all prints every lock: leave out --limit")
    redis = redis_settings(params)
    scan = scan_settings(params)
    target = redis.target()
    if every:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the command quietly
    keep = 0 if every else SHOWN if limit is None else limit
    try:
        result = read_once(redis, scan, keep, json_lines(stuck_only) if every else None)
    except PassFailed as failed:
        raise OperatorError(f"cannot read locks from {target}: {failed.reason(target)}") from None
    if every:
        return
    snapshot = result.snapshot
    state = MonitorState(redis_up=True, snapshot=snapshot, nodes=result.nodes)
    shown = [lock for lock in snapshot.oldest if lock.stuck or not stuck_only]
    document = status_document(state, target, redis.mode, time.time(), shown, one_pass=True)
    click.echo(json.dumps(document, indent=2) if as_json else lock_table(document))
    if not as_json and len(snapshot.oldest) < snapshot.active:
        click.echo(
            f"(the oldest {len(snapshot.oldest)} of {snapshot.active} locks: --limit N for more,"
            " --all for every lock)"
        )
