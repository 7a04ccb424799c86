"""HTTP: /metrics for Prometheus, /healthz and /readyz for Kubernetes, / and /locks for people.

prometheus_client renders /metrics (with OpenMetrics negotiation); its own server answers
every path with metrics, so this small WSGI dispatcher routes the other paths.
Every page reads the monitor's published state: no request ever waits for Redis.
"""

from __future__ import annotations

import html
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.registry import CollectorRegistry

from lock_monitor.monitor import MonitorState

READY_WITHIN_INTERVALS = 3
StartResponse = Callable[..., Any]


def status_document(state: MonitorState, target: str, mode: str, now: float) -> dict[str, Any]:
    """What / and /locks show: the target (no password), the last pass and the oldest locks."""
    snapshot = state.snapshot
    return {
        "target": target,
        "mode": mode,
        "redis_up": state.redis_up,
        "last_error": state.last_error,
        "nodes": [{"node": name, "up": up} for name, up in state.nodes],
        "next_pass_delay_seconds": round(state.delay_seconds, 3),
        "pacing_active": state.paced,
        "last_success": None
        if snapshot is None
        else {
            "completed_at": snapshot.completed_at,
            "seconds_ago": round(now - snapshot.completed_at, 3),
            "duration_seconds": round(snapshot.duration_seconds, 6),
            "keys_scanned": snapshot.keys_scanned,
            "active": snapshot.active,
            "stuck": snapshot.stuck,
            "without_ttl": snapshot.without_ttl,
        },
        "oldest_locks": [] if snapshot is None else [lock._asdict() for lock in snapshot.oldest],
    }


def readiness(state: MonitorState, interval: float, now: float) -> str | None:
    """None when ready; else why not. Ready means a pass succeeded within 3 intervals."""
    since = state.seconds_since_success(now)
    if since is None:
        return "no successful pass yet" + (f": {state.last_error}" if state.last_error else "")
    assert state.snapshot is not None
    # Pacing may stretch the interval; the allowance stretches with it.
    wait = max(interval, state.delay_seconds if state.redis_up else interval)
    limit = READY_WITHIN_INTERVALS * (wait + state.snapshot.duration_seconds)
    if since > limit:
        reason = f"last successful pass {since:.1f}s ago (limit {limit:.1f}s)"
        return reason + (f": {state.last_error}" if state.last_error else "")
    return None


def _fmt(seconds: float | None) -> str:
    return "no TTL" if seconds is None else f"{seconds:.1f}s"


def status_page(document: dict[str, Any]) -> str:
    esc = html.escape
    last = document["last_success"]
    rows = "".join(
        f"<tr><td>{esc(lock['key'])}</td><td>{_fmt(lock['age_seconds'])}</td>"
        f"<td>{_fmt(lock['ttl_seconds'])}</td><td>{'yes' if lock['stuck'] else ''}</td>"
        f"<td>{esc(lock['value'])}</td></tr>"
        for lock in document["oldest_locks"]
    )
    if last is None:
        summary = "<p>No successful pass yet.</p>"
    else:
        summary = (
            f"<p>Last successful pass {last['seconds_ago']:.1f}s ago, took "
            f"{last['duration_seconds'] * 1000:.1f} ms over {last['keys_scanned']} keys.</p>"
            f"<p><b>{last['active']}</b> active, <b>{last['stuck']}</b> stuck, "
            f"<b>{last['without_ttl']}</b> without TTL.</p>"
        )
    health = "up" if document["redis_up"] else "DOWN"
    error = f"<p>Last error: {esc(document['last_error'])}</p>" if document["last_error"] else ""
    nodes = "".join(
        f"<li>{esc(n['node'])}: {'up' if n['up'] else 'DOWN'}</li>" for n in document["nodes"]
    )
    if nodes:
        nodes = f"<p>Read in the last pass ({esc(document['mode'])}):</p><ul>{nodes}</ul>"
    pacing = (
        f"<p>Pacing: passes are long, so the wait is stretched to "
        f"{document['next_pass_delay_seconds']:.1f}s to bound the load on Redis.</p>"
        if document["pacing_active"]
        else ""
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>lock-monitor</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px;text-align:left}}</style>
</head><body>
<h1>lock-monitor</h1>
<p>Target: {esc(document["target"])} ({esc(document["mode"])}), Redis {health}</p>
{error}{nodes}{summary}{pacing}
<h2>Oldest locks</h2>
<table><tr><th>Key</th><th>Age</th><th>TTL</th><th>Stuck</th><th>Holder value</th></tr>
{rows}</table>
<p><a href="/metrics">/metrics</a> · <a href="/locks">/locks</a> · <a href="/healthz">/healthz</a>
· <a href="/readyz">/readyz</a></p>
</body></html>
"""


class App:
    """The WSGI application: routes by path, reads the monitor's state."""

    def __init__(
        self,
        state: Callable[[], MonitorState],
        alive: Callable[[], bool],
        registry: CollectorRegistry,
        target: str,
        mode: str,
        interval: float,
    ) -> None:
        self.state, self.alive, self.target, self.mode = state, alive, target, mode
        self.interval = interval
        self.metrics_app = make_wsgi_app(registry)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return self.metrics_app(environ, start_response)  # type: ignore[no-any-return]
        now = time.time()
        if path == "/healthz":
            alive = self.alive()
            return _reply(
                start_response, 200 if alive else 503, "ok\n" if alive else "pass loop stopped\n"
            )
        if path == "/readyz":
            reason = readiness(self.state(), self.interval, now)
            return _reply(start_response, 503 if reason else 200, (reason or "ready") + "\n")
        if path in ("/", "/locks"):
            document = status_document(self.state(), self.target, self.mode, now)
            if path == "/locks":
                return _reply(
                    start_response, 200, json.dumps(document, indent=2) + "\n", "application/json"
                )
            return _reply(start_response, 200, status_page(document), "text/html; charset=utf-8")
        return _reply(start_response, 404, "not found\n")


def _reply(
    start_response: StartResponse,
    status: int,
    body: str,
    content_type: str = "text/plain; charset=utf-8",
) -> list[bytes]:
    data = body.encode()
    reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
    start_response(
        f"{status} {reason}", [("Content-Type", content_type), ("Content-Length", str(len(data)))]
    )
    return [data]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow client must not hold up shutdown


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds are not news; errors still reach the log as exceptions."""


class HttpServer:
    """The HTTP server in a background thread, so the main thread can wait for signals."""

    def __init__(self, app: App, address: str, port: int) -> None:
        server_class = _Server6 if ":" in address else _Server  # "::" listens on IPv6 too
        self._server = make_server(
            address, port, app, server_class=server_class, handler_class=_QuietHandler
        )
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="http",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
