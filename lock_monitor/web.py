"""HTTP: /metrics for Prometheus, /healthz and /readyz for Kubernetes, / and /locks for people.

prometheus_client renders /metrics (with OpenMetrics negotiation); its own server answers
every path with metrics, so this small WSGI dispatcher routes the other paths, served by
client_python's own threading server and quiet handler.
Every page reads the monitor's published state: no request ever waits for Redis.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from typing import Any
from wsgiref.simple_server import make_server

from prometheus_client import make_wsgi_app

# Private names of client_python, the pieces its own start_wsgi_server is built from: a
# server with daemon threads, a handler that does not log every scrape, and the address
# family chosen with getaddrinfo (IPv6 literals and host names too). tests/unit/test_web.py
# fails loudly if a release renames them.
from prometheus_client.exposition import (
    ThreadingWSGIServer,
    _get_best_family,
    _SilentHandler,
)
from prometheus_client.registry import CollectorRegistry

from lock_monitor.config import SCRAPE_ALLOWANCE_SECONDS, STALE_ALERT_SECONDS, ScanSettings
from lock_monitor.deadline import hang_up
from lock_monitor.events import EventsView
from lock_monitor.history import History
from lock_monitor.monitor import MonitorState
from lock_monitor.views import printable, status_document, status_page
from lock_monitor.webconfig import BasicAuth, ServerTls

READY_WITHIN_INTERVALS = 3
# Connections: what a burst of scrapes, a slow client or an idle socket can cost.
BACKLOG = 1024  # connections the kernel queues for accept (Linux caps it at somaxconn)
MAX_CONNECTIONS = 128  # handled at once, a thread each
IDLE_TIMEOUT_SECONDS = 5.0  # a client silent (or not reading) this long is hung up on
CONNECTION_DEADLINE_SECONDS = 10.0  # no connection lasts longer, however it trickles
EVICT_AFTER_SECONDS = 0.5  # when full, the oldest connection past this age gives up its slot
FULL_WAIT_SECONDS = 2.0  # when full, how long a newcomer waits for a slot before a 503
SLOT_POLL_SECONDS = 0.05
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
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
        events: Callable[[], EventsView] | None = None,
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
        events = self.events() if self.events is not None else None
        return status_document(
            self.state(),
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


class _Handler(_SilentHandler):
    """client_python's quiet handler, naming no Python version even in its own error pages,
    and giving up on a client that stays silent (or stops reading) for IDLE_TIMEOUT_SECONDS."""

    timeout = IDLE_TIMEOUT_SECONDS

    def version_string(self) -> str:
        return SERVER_NAME


@dataclass
class _Connection:
    started: float
    sock: socket.socket


class _Server(ThreadingWSGIServer):
    """client_python's threading server with bounds: a real listen backlog, at most
    MAX_CONNECTIONS handled at once, none for longer than CONNECTION_DEADLINE_SECONDS.

    When every slot is taken, the oldest connection gives its slot up if it has had
    EVICT_AFTER_SECONDS (a scrape is answered in milliseconds: what is that old is a slow or
    idle client); otherwise the newcomer waits up to FULL_WAIT_SECONDS for a slot, then gets
    a quick 503. So idle or slow sockets cannot pin threads, nor keep Prometheus out.
    """

    request_queue_size = BACKLOG
    tls: ServerTls | None = None  # set before serving: every connection then speaks TLS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._open: dict[socket.socket, _Connection] = {}
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._take_slot():
            self._refuse(request)
            return
        with self._open_lock:
            self._open[request] = _Connection(time.monotonic(), request)
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open.pop(request, None)
            self._slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(IDLE_TIMEOUT_SECONDS)  # the TLS handshake's reads too
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        secure = self._secure(request)
        if secure is not None:
            try:
                super().finish_request(secure, client_address)
            finally:
                self.shutdown_request(secure)

    def _secure(self, request: socket.socket) -> ssl.SSLSocket | None:
        """The connection with TLS on, with the context of the certificate files as they are now;
        None when the handshake fails or the client's certificate names no allowed SAN."""
        assert self.tls is not None
        try:
            secure = self.tls.context().wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):  # not TLS, or a certificate that does not verify
            return None
        with self._open_lock:
            if request in self._open:
                self._open[request].sock = secure  # the plain socket was handed over to it
        if not self.tls.settings.san_allowed(secure):
            self.shutdown_request(secure)
            return None
        return secure

    def service_actions(self) -> None:
        """Between polls of the accept loop: end connections past their deadline."""
        cutoff = time.monotonic() - CONNECTION_DEADLINE_SECONDS
        with self._open_lock:
            late = [c.sock for c in self._open.values() if c.started < cutoff]
        for sock in late:
            hang_up(sock)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away or timed out is not an error of the exporter: no traceback."""

    def _take_slot(self) -> bool:
        """A slot now, or once one is given up (or taken back from an old connection)."""
        if self._slots.acquire(blocking=False):
            return True
        deadline = time.monotonic() + FULL_WAIT_SECONDS
        while time.monotonic() < deadline:
            self._evict_oldest()
            if self._slots.acquire(timeout=SLOT_POLL_SECONDS):
                return True
        return False

    def _evict_oldest(self) -> None:
        with self._open_lock:
            oldest = min(self._open.values(), key=lambda c: c.started, default=None)
        if oldest is not None and time.monotonic() - oldest.started > EVICT_AFTER_SECONDS:
            hang_up(oldest.sock)

    def _refuse(self, request: socket.socket) -> None:
        if self.tls is None:  # a TLS client would not understand plain text
            with contextlib.suppress(OSError):
                request.sendall(BUSY)
        self.shutdown_request(request)


class HttpServer:
    """The HTTP server in a background thread, so the main thread can wait for signals."""

    def __init__(self, app: App, address: str, port: int, tls: ServerTls | None = None) -> None:
        class Server(_Server):
            """A class of its own: the address family is a class attribute."""

        Server.tls = tls
        Server.address_family, host = _get_best_family(address, port)  # type: ignore[no-untyped-call]
        self._server = make_server(host, port, app, Server, handler_class=_Handler)
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
