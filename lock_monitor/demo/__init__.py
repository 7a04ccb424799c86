"""The demo: a throwaway Redis with simulated booking traffic, for the exporter to watch.

A newcomer with only Python should see real numbers move within a minute, so the demo
starts a real `redis-server` and books appointments the way the backend does, including the
faults that make locks stuck.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from lock_monitor.config import RedisSettings, ScanSettings, ServerSettings
from lock_monitor.daemon import serve
from lock_monitor.demo.redis_server import DEMO_ARGS, RedisProcess, find_redis_server
from lock_monitor.demo.traffic import Traffic


def run_demo(
    scan: ScanSettings,
    server: ServerSettings,
    log: Any,
    stop: threading.Event,
    on_serving: Callable[[int], None],
) -> None:
    """A throwaway Redis with booking traffic, watched by the exporter until `stop` is set."""
    with RedisProcess(find_redis_server(), *DEMO_ARGS) as redis_process:
        log.info(
            "demo_redis_started",
            binary=redis_process.binary,
            port=redis_process.port,
            pid=redis_process.pid,
        )
        with redis_process.client() as client, Traffic(client, log=log) as traffic:
            serve(RedisSettings(url=redis_process.url), scan, server, log, stop, on_serving)
        log.info("demo_traffic", **asdict(traffic.stats))
