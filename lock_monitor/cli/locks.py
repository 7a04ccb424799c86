"""`lock-monitor locks`: one pass now, printed for a person or a script."""

from __future__ import annotations

import json
from typing import Any

import click

from lock_monitor import logs
from lock_monitor.cli.options import redis_options, redis_settings, scan_options, scan_settings
from lock_monitor.errors import OperatorError
from lock_monitor.monitor import Monitor
from lock_monitor.views import format_table


@click.command()
@redis_options
@scan_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--stuck", "stuck_only", is_flag=True, help="Only the stuck locks.")
def locks(as_json: bool, stuck_only: bool, **params: Any) -> None:
    """Read the locks once now and print them, oldest first."""
    logs.configure("warning", "auto")
    redis = redis_settings(params)
    target = redis.target()
    monitor = Monitor(redis, scan_settings(params))
    try:
        snapshot, _ = monitor.run_pass(keep=None)
    except Exception as exc:
        reason = monitor.describe_error(exc).removeprefix(f"{target}: ")  # one node: named once
        raise OperatorError(f"cannot read locks from {target}: {reason}") from None
    shown = [lock for lock in snapshot.oldest if lock.stuck or not stuck_only]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "target": redis.target(),
                    "active": snapshot.active,
                    "stuck": snapshot.stuck,
                    "without_ttl": snapshot.without_ttl,
                    "locks": [lock._asdict() for lock in shown],
                },
                indent=2,
            )
        )
        return
    click.echo(format_table(shown))
    click.echo(
        f"{snapshot.active} active, {snapshot.stuck} stuck, "
        f"{snapshot.without_ttl} without TTL ({redis.target()})"
    )
