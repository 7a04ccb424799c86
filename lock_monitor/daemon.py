"""The long-running process: the pass loop and the HTTP server, until a signal stops them."""

from __future__ import annotations

import errno
import signal
import threading
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from lock_monitor import __version__
from lock_monitor.config import RedisSettings, ScanSettings, ServerSettings
from lock_monitor.errors import OperatorError
from lock_monitor.events import Events
from lock_monitor.httpserver import HttpServer
from lock_monitor.liveset import LiveSet
from lock_monitor.metrics import build_registry
from lock_monitor.monitor import Monitor
from lock_monitor.web import App
from lock_monitor.webconfig import BasicAuth, ServerTls


def stop_on_signals(log: Any) -> threading.Event:
    """An event that SIGTERM and SIGINT set.

    As PID 1 in a container there is no default action for SIGTERM: handle it.
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def listen_error(server_settings: ServerSettings, exc: OSError) -> OperatorError:
    """Why HTTP cannot be served, naming the option that fixes it."""
    host, port = server_settings.listen_address, server_settings.port
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno in (errno.EADDRINUSE, errno.EACCES):
        fix = "choose another port with --port or LOCK_MONITOR_PORT"
    else:
        fix = "check --listen-address or LOCK_MONITOR_LISTEN_ADDRESS"
    return OperatorError(f"cannot listen on {where}: {exc.strerror or exc}; {fix}")


def serve(
    redis: RedisSettings,
    scan: ScanSettings,
    server_settings: ServerSettings,
    log: Any,
    stop: threading.Event,
    on_serving: Callable[[int], None] = lambda port: None,
) -> None:
    """Run the pass loop and the HTTP server until `stop` is set; `on_serving` gets the port."""
    log.info(
        "starting",
        version=__version__,
        redis=redis.redacted(),
        scan=asdict(scan),
        http=server_settings.redacted(),
    )

    events = None
    if scan.events != "off":
        live = LiveSet(scan.stuck_threshold)
        events = Events(redis, scan.pattern, scan.events, live, log)
    monitor = Monitor(redis, scan, log=log, events=events)
    view = events.view if events is not None else None
    registry = build_registry(lambda: monitor.state, redis.mode, view)
    web = server_settings.web
    app = App(
        lambda: monitor.state,
        monitor.is_alive,
        registry,
        redis.target(),
        redis.mode,
        scan.interval,
        stuck_threshold=scan.stuck_threshold,
        history=monitor.history,
        events=view,
        auth=BasicAuth(web.users) if web and web.users else None,
        headers=web.headers if web else (),
    )
    tls = None
    if web and web.tls:
        tls = ServerTls(web.tls, lambda error: log.warning("web_tls_reload_failed", error=error))
    try:
        server = HttpServer(app, server_settings.listen_address, server_settings.port, tls)
    except OSError as exc:
        raise listen_error(server_settings, exc) from None

    monitor.start()
    server.start()
    log.info("serving", address=server_settings.listen_address, port=server.port)
    on_serving(server.port)
    while not stop.wait(0.5):
        pass
    server.stop()
    monitor.stop()
    log.info("stopped")
