"""`lock-monitor locks`: one pass now, printed for a person or a script."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from lock_monitor import logs
from lock_monitor.cli.options import (
    option,
    redis_options,
    redis_settings,
    scan_options,
    scan_settings,
)
from lock_monitor.config import RedisSettings, ScanSettings
from lock_monitor.connection import connect
from lock_monitor.errors import OperatorError
from lock_monitor.locks import LockTracker
from lock_monitor.monitor import MonitorState
from lock_monitor.passes import PassFailed, PassResult, describe_error, read_pass
from lock_monitor.views import lock_table, status_document


def read_once(redis: RedisSettings, scan: ScanSettings) -> PassResult:
    """One pass on a fresh connection, keeping every lock; failing to connect fails the pass."""
    try:
        target = connect(redis)  # a cluster reads its topology from the seed here
    except Exception as exc:
        raise PassFailed({redis.target(): describe_error(exc, redis)}) from None
    try:
        return read_pass(target, scan, LockTracker(scan.stuck_threshold), {}, keep_oldest=None)
    finally:
        target.close()


@click.command()
@redis_options
@scan_options
@option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@option("--stuck", "stuck_only", is_flag=True, help="Only the stuck locks.")
def locks(as_json: bool, stuck_only: bool, **params: Any) -> None:
    """Read the locks once now and print them, oldest first."""
    logs.configure("warning", "auto")
    redis = redis_settings(params)
    scan = scan_settings(params)
    target = redis.target()
    try:
        result = read_once(redis, scan)
    except PassFailed as failed:
        raise OperatorError(f"cannot read locks from {target}: {failed.reason(target)}") from None
    state = MonitorState(redis_up=True, snapshot=result.snapshot, nodes=result.nodes)
    shown = [lock for lock in result.snapshot.oldest if lock.stuck or not stuck_only]
    document = status_document(state, target, redis.mode, time.time(), shown, one_pass=True)
    click.echo(json.dumps(document, indent=2) if as_json else lock_table(document))
