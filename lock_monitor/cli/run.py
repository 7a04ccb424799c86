"""`lock-monitor run`: the exporter itself."""

from __future__ import annotations

from typing import Any

import click
import structlog

from lock_monitor import logs
from lock_monitor.cli.options import (
    FiniteFloat,
    interval_option,
    log_options,
    option,
    port_option,
    redis_options,
    redis_settings,
    scan_options,
    scan_settings,
)
from lock_monitor.config import ScanSettings, ServerSettings
from lock_monitor.daemon import serve, stop_on_signals

MODE_EXAMPLES = """\b
Examples, one per mode:
  lock-monitor run --redis-url redis://redis:6379/0
  lock-monitor run --redis-mode cluster --redis-url redis://redis-cluster-0.redis-cluster:6379
  lock-monitor run --redis-mode sentinel --sentinel sentinel-0:26379 \\
      --sentinel sentinel-1:26379 --sentinel-master mymaster
  lock-monitor run --redis-url rediss://redis:6380/0 --redis-ca-file /tls/ca.crt
"""


@click.command(epilog=MODE_EXAMPLES)
@redis_options
@scan_options
@interval_option(ScanSettings.interval)
@option(
    "--max-redis-load",
    type=FiniteFloat(min=0, max=1, min_open=True),
    default=0.05,
    help="Largest share of Redis' time the passes may take; long passes stretch the wait.",
)
@option("--listen-address", default="0.0.0.0", help="Address to serve HTTP on.")
@port_option
@log_options
def run(**params: Any) -> None:
    """Run the exporter: scan the locks in the background and serve the results."""
    logs.configure(params["log_level"].lower(), params["log_format"])
    log = structlog.get_logger("lock_monitor")
    stop = stop_on_signals(log)
    serve(
        redis_settings(params),
        scan_settings(params),
        ServerSettings(params["listen_address"], params["port"]),
        log,
        stop,
    )
