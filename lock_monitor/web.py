"""HTTP: what /metrics, /healthz, /readyz, / and /locks answer (a WSGI application).

prometheus_client renders /metrics (with OpenMetrics negotiation); its own server answers
every path with metrics, so this small dispatcher routes the other paths. Every page reads
the monitor's published state: no request ever waits for Redis. `httpserver` serves it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from http import HTTPStatus
from importlib import resources
from typing import Any

from prometheus_client import make_wsgi_app
from prometheus_client.registry import CollectorRegistry

from lock_monitor.config import SCRAPE_ALLOWANCE_SECONDS, STALE_ALERT_SECONDS, ScanSettings
from lock_monitor.events import EventsView
from lock_monitor.history import History
from lock_monitor.monitor import MonitorState
from lock_monitor.page import status_page
from lock_monitor.views import printable, status_document
from lock_monitor.webconfig import BasicAuth

READY_WITHIN_INTERVALS = 3
TEXT = "text/plain; charset=utf-8"
STATIC = {"page.css": "text/css; charset=utf-8", "page.js": "text/javascript; charset=utf-8"}
PAGE_REFRESH_SECONDS = (2.0, 30.0)  # the page refreshes every interval, within these bounds
StartResponse = Callable[..., Any]


def readiness(state: MonitorState, interval: float, now: float) -> str | None:
    """None when ready; else why not. Ready means a pass succeeded within 3 cycles (a wait
    and a pass: room for a failed pass or two), and never longer ago than LockMonitorStale
    allows, less a scrape, unless --interval itself is longer: ready and stale never agree."""
    since = state.seconds_since_success(now)
    if since is None:
        return "no successful pass yet" + (f": {state.last_error}" if state.last_error else "")
    assert state.snapshot is not None
    # Pacing may stretch the wait (up to its cap); the allowance stretches with it.
    wait = max(interval, state.delay_seconds if state.redis_up else interval)
    cycle = wait + state.snapshot.duration_seconds
    stale = STALE_ALERT_SECONDS - SCRAPE_ALLOWANCE_SECONDS
    limit = max(min(READY_WITHIN_INTERVALS * cycle, stale), cycle + interval)
    if since > limit:
        reason = f"last successful pass {since:.1f}s ago (limit {limit:.1f}s)"
        return reason + (f": {state.last_error}" if state.last_error else "")
    return None


Response = tuple[HTTPStatus, str, str]  # status, body, content type
Reply = tuple[str, list[tuple[str, str]], bytes]  # status line, headers, body

# Sent with every response (CONTRACTS.md): the page's script and style come from this server
# as files, never inline; nothing may frame it; no content type is guessed; no versions told.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SERVER_NAME = "lock-monitor"
SECURITY_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Server", SERVER_NAME),
)
ALLOWED_METHODS = ("GET", "HEAD")
OPEN_PATHS = ("/healthz", "/readyz")  # for probes: no basic auth, even when users are set


class App:
    """The WSGI application: routes by path (a table), every page reading the monitor's state.

    Every response goes out the same way: the security headers, a Content-Length, no body for
    HEAD, and 405 for a method other than GET and HEAD.
    """

    def __init__(
        self,
        state: Callable[[], MonitorState],
        alive: Callable[[], bool],
        registry: CollectorRegistry,
        target: str,
        mode: str,
        interval: float,
        *,
        stuck_threshold: float = ScanSettings.stuck_threshold,
        history: History | None = None,
        events: Callable[[Sequence[str]], EventsView] | None = None,
        auth: BasicAuth | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.state, self.alive, self.target, self.mode = state, alive, target, mode
        self.interval, self.stuck_threshold, self.history = interval, stuck_threshold, history
        self.events = events
        self.metrics_app = make_wsgi_app(registry)
        self.auth = auth
        chosen = dict(headers)  # the web config's headers replace the defaults of that name
        self.headers = [(k, chosen.pop(k, v)) for k, v in SECURITY_HEADERS] + list(chosen.items())
        self.routes: dict[str, Callable[[float], Response]] = {
            "/": self.status_page,
            "/locks": self.locks,
            "/healthz": self.healthz,
            "/readyz": self.readyz,
        }
        for name, content_type in STATIC.items():
            self.routes[f"/static/{name}"] = static_file(name, content_type)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        status, headers, body = self.respond(method, environ)
        start_response(status, [*headers, *self.headers, ("Content-Length", str(len(body)))])
        return [] if method == "HEAD" else [body]

    def respond(self, method: str, environ: dict[str, Any]) -> Reply:
        path = environ.get("PATH_INFO", "/")
        authorization = environ.get("HTTP_AUTHORIZATION")
        if self.auth and path not in OPEN_PATHS and not self.auth.allows(authorization):
            challenge = [("WWW-Authenticate", 'Basic realm="lock-monitor", charset="UTF-8"')]
            return _reply(HTTPStatus.UNAUTHORIZED, "unauthorized\n", TEXT, challenge)
        if method not in ALLOWED_METHODS:
            allow = [("Allow", ", ".join(ALLOWED_METHODS))]
            return _reply(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed\n", TEXT, allow)
        if path == "/metrics":
            return self.metrics(environ)
        route = self.routes.get(path)
        if route is None:
            return _reply(HTTPStatus.NOT_FOUND, "not found\n", TEXT)
        return _reply(*route(time.time()))

    def metrics(self, environ: dict[str, Any]) -> Reply:
        """client_python's exposition (format negotiation, gzip, name[] filters), as a GET."""
        replied: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            replied.update(status=status, headers=headers)

        body = b"".join(self.metrics_app({**environ, "REQUEST_METHOD": "GET"}, capture))
        return replied["status"], list(replied["headers"]), body

    def healthz(self, now: float) -> Response:
        if self.alive():
            return HTTPStatus.OK, "ok\n", TEXT
        return HTTPStatus.SERVICE_UNAVAILABLE, "pass loop stopped\n", TEXT

    def readyz(self, now: float) -> Response:
        reason = readiness(self.state(), self.interval, now)
        if reason:
            return HTTPStatus.SERVICE_UNAVAILABLE, printable(reason) + "\n", TEXT
        return HTTPStatus.OK, "ready\n", TEXT

    def document(self, now: float) -> dict[str, Any]:
        state = self.state()
        events = None
        if self.events is not None:  # which of the locks listed the events saw end since
            shown = () if state.snapshot is None else state.snapshot.oldest
            events = self.events([lock.key for lock in shown])
        return status_document(
            state,
            self.target,
            self.mode,
            now,
            stuck_threshold=self.stuck_threshold,
            events=events,
        )

    def locks(self, now: float) -> Response:
        return HTTPStatus.OK, json.dumps(self.document(now), indent=2) + "\n", "application/json"

    def status_page(self, now: float) -> Response:
        window = self.history.window(now) if self.history else None
        series = self.history.series if self.history else ()
        refresh = min(max(self.interval, PAGE_REFRESH_SECONDS[0]), PAGE_REFRESH_SECONDS[1])
        page = status_page(self.document(now), window, series, refresh)
        return HTTPStatus.OK, page, "text/html; charset=utf-8"


def static_file(name: str, content_type: str) -> Callable[[float], Response]:
    """A route serving one file of lock_monitor/static, read once (the page's CSP wants its
    script and style as files of this origin)."""
    body = resources.files("lock_monitor").joinpath("static", name).read_text(encoding="utf-8")
    return lambda now: (HTTPStatus.OK, body, content_type)


def _reply(
    status: HTTPStatus, body: str, content_type: str, headers: Iterable[tuple[str, str]] = ()
) -> Reply:
    return (
        f"{status.value} {status.phrase}",
        [("Content-Type", content_type), *headers],
        body.encode(),
    )
