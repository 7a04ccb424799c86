"""`lock-monitor run`: the exporter itself."""

from __future__ import annotations

from typing import Any

import click

from lock_monitor.cli.options import (
    LISTEN_ADDRESS,
    WEB_CONFIG_FILE,
    interval_option,
    log_options,
    option,
    port_option,
    redis_options,
    redis_settings,
    scan_options,
    scan_settings,
    server_settings,
    start_logging,
)
from lock_monitor.cli.validation import FiniteFloat
from lock_monitor.config import (
    DEFAULT_EVENTS,
    DEFAULT_INTERVAL,
    DEFAULT_MAX_REDIS_LOAD,
    EVENTS_MODES,
    RedisSettings,
)
from lock_monitor.connection import connect
from lock_monitor.daemon import serve, stop_on_signals
from lock_monitor.subscriber import RECOMMENDED_SETTING, startup_problem

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
@interval_option(DEFAULT_INTERVAL)
@option(
    "--max-redis-load",
    type=FiniteFloat(min=0, max=1, min_open=True),
    default=DEFAULT_MAX_REDIS_LOAD,
    help="Largest share of Redis' time the passes may take; long passes stretch the wait.",
)
@option(
    "--events",
    type=click.Choice(EVENTS_MODES),
    default=DEFAULT_EVENTS,
    help="Follow the lock keys' keyspace events between passes (Redis must publish "
    f"{RECOMMENDED_SETTING}): auto uses them when the server publishes them; on also refuses "
    "to start when it does not; off: passes only.",
)
@LISTEN_ADDRESS
@port_option
@WEB_CONFIG_FILE
@log_options
def run(**params: Any) -> None:
    """Run the exporter: scan the locks in the background and serve the results."""
    log = start_logging(params)  # first: building the settings may log a warning
    redis, scan, server = redis_settings(params), scan_settings(params), server_settings(params)
    if scan.events == "on":
        require_events(redis)
    serve(redis, scan, server, log, stop_on_signals(log))


class EventsNotPublished(click.ClickException):
    """`--events on` against a server that says it will not publish them: a setup error."""

    exit_code = 2


def require_events(redis: RedisSettings) -> None:
    problem = startup_problem(redis, connect)
    if problem is not None:
        raise EventsNotPublished(f"--events on: {redis.scrub(problem)}")
