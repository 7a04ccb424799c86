"""The HTTP server of the web app: client_python's threading server with bounds on what a
burst of scrapes, a slow client or an idle socket can cost, and TLS when configured.

client_python's own start_wsgi_server is built from the same pieces; this one adds a real
listen backlog, a thread only for a connection that has sent something, deadlines, and a
short GIL switch interval while it serves.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import resource
import selectors
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast
from wsgiref.simple_server import make_server

# Private names of client_python, the pieces its own start_wsgi_server is built from: a
# server with daemon threads, a handler that does not log every scrape, and the address
# family chosen with getaddrinfo (IPv6 literals and host names too).
# tests/unit/test_httpserver.py fails loudly if a release renames them.
from prometheus_client.exposition import (
    ThreadingWSGIServer,
    _get_best_family,
    _SilentHandler,
)

from lock_monitor.deadline import hang_up
from lock_monitor.web import SERVER_NAME, App
from lock_monitor.webconfig import ServerTls

# Connections: what a burst of scrapes, a slow client or an idle socket can cost.
BACKLOG = 1024  # connections the kernel queues for accept (Linux caps it at somaxconn)
MAX_CONNECTIONS = 128  # handled at once, a thread each
MAX_WAITING = 1024  # accepted but silent so far: a file descriptor each, no thread
MAX_WAITING_PER_PEER = 512  # of those, from one address
FILE_LIMIT = 65_536  # the soft limit on open files is raised to this, when allowed
ACCEPT_BATCH = 64  # connections accepted in a row before the others in the loop get a turn
FIRST_BYTE_SECONDS = 1.0  # an accepted connection that sends nothing this long is closed
REQUEST_SECONDS = 2.0  # the request line and headers must be in this long after the accept
IDLE_TIMEOUT_SECONDS = 5.0  # a client silent (or not reading) this long is hung up on
CONNECTION_DEADLINE_SECONDS = 10.0  # no connection lasts longer, however it trickles
EVICT_AFTER_SECONDS = 0.5  # when full, connections past this age give up their slots
FULL_WAIT_SECONDS = 2.0  # when full, how long a newcomer waits for a slot before a 503
SLOT_POLL_SECONDS = 0.05
BUSY = ("HTTP/1.1 503 Service Unavailable", "Content-Length: 0", "Connection: close")
HTTP_09 = "HTTP/0.9"  # a request line without a version
# How long a thread keeps the GIL while another waits for it (Python's default: 5 ms). A
# scrape takes the GIL several times (accept, read, answer); behind a pass thread busy in
# Python each take waited up to the whole interval (docs/performance.md, (c)).
GIL_SWITCH_SECONDS = 0.0001


class _Handler(_SilentHandler):
    """client_python's quiet handler, naming no Python version even in its own error pages,
    and giving up on a client that stays silent (or stops reading) for IDLE_TIMEOUT_SECONDS."""

    timeout = IDLE_TIMEOUT_SECONDS
    server: _Server

    def version_string(self) -> str:
        return SERVER_NAME

    def parse_request(self) -> bool:
        """The request line and headers are in: the connection is past the request deadline.
        An HTTP/0.9 request is refused: its answer could carry no headers."""
        parsed = super().parse_request()
        if parsed and self.request_version == HTTP_09:
            self.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED)
            parsed = False
        self.server.request_read()
        return parsed

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own error pages (400, 414, 431, 505...), with a status line
        and headers even when the request was too broken to name its version (it would
        answer those as HTTP/0.9: a bare body)."""
        if self.request_version == HTTP_09:
            self.request_version = "HTTP/1.0"
        super().send_error(code, message, explain)

    def send_response(self, code: int, message: str | None = None) -> None:
        """Only the error pages come this way: they carry the headers every answer carries."""
        super().send_response(code, message)
        for name, value in self.server.answer_headers():
            self.send_header(name, value)


@dataclass
class _Connection:
    started: float
    sock: socket.socket
    answering: bool = False  # its request has been read: it is being answered
    evicted: bool = False  # hung up on, its thread not yet gone


class _Server(ThreadingWSGIServer):
    """client_python's threading server with bounds: a real listen backlog, a thread only for
    a connection that has sent something, at most MAX_CONNECTIONS of those at once, none for
    longer than CONNECTION_DEADLINE_SECONDS.

    An accepted connection waits in the accept loop's selector (a file descriptor, no thread)
    until its first bytes arrive: one silent for FIRST_BYTE_SECONDS is closed, and past
    MAX_WAITING (or MAX_WAITING_PER_PEER from one address) the oldest waiting is closed. So a
    flood of idle sockets costs the loop a few microseconds each, and a scrape behind them is
    reached at once. A connection that does not deliver its request within REQUEST_SECONDS
    is hung up on. When every thread is taken, the connections still sending their request
    past EVICT_AFTER_SECONDS are all hung up on at once (else the oldest one past it gives its
    slot up); a newcomer that finds no slot within FULL_WAIT_SECONDS gets a quick 503.
    """

    request_queue_size = BACKLOG
    tls: ServerTls | None = None  # set before serving: every connection then speaks TLS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._open: dict[socket.socket, _Connection] = {}
        self._open_lock = threading.Lock()
        self._local = threading.local()  # the handler thread's own _Connection
        # Only the accept loop's thread touches these. Waiting: (peer, when accepted), oldest first.
        self._waiting: dict[socket.socket, tuple[str, float]] = {}
        self._per_peer: collections.Counter[str] = collections.Counter()
        # Ready: (socket, address, when accepted, when its first bytes came), in order.
        self._ready: collections.deque[tuple[socket.socket, Any, float, float]] = (
            collections.deque()
        )
        self._selector = selectors.DefaultSelector()
        self._stopping = threading.Event()
        self._stopped = threading.Event()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """socketserver's loop, with the connections waiting for their first bytes in it."""
        self.socket.setblocking(False)  # accept until none is left, without blocking
        self._selector.register(self.socket, selectors.EVENT_READ)
        try:
            while not self._stopping.is_set():
                timeout = SLOT_POLL_SECONDS if self._ready else poll_interval
                for key, _ in self._selector.select(timeout):
                    if key.fileobj is self.socket:
                        self._accept()
                    elif key.fileobj in self._waiting:  # not closed earlier in this round
                        self._first_bytes(key.fileobj, key.data)
                self._dispatch()
                self.service_actions()
        finally:
            for sock in [*self._waiting, *(ready[0] for ready in self._ready)]:
                self.shutdown_request(sock)
            self._selector.close()
            self._stopped.set()

    def shutdown(self) -> None:
        self._stopping.set()
        self._stopped.wait()

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):  # then back to the selector: the others get their turn
            try:
                request, address = self.get_request()
            except OSError as exc:  # none left, or out of file descriptors
                if exc.errno not in (errno.EMFILE, errno.ENFILE) or not self._waiting:
                    return
                self._close_waiting(next(iter(self._waiting)))  # the oldest silent one
                continue
            peer = str(address[0])
            self._waiting[request] = (peer, time.monotonic())
            self._per_peer[peer] += 1
            self._selector.register(request, selectors.EVENT_READ, address)
            if self._per_peer[peer] > MAX_WAITING_PER_PEER:
                self._close_waiting(next(s for s, (p, _) in self._waiting.items() if p == peer))
            if len(self._waiting) > MAX_WAITING:
                self._close_waiting(next(iter(self._waiting)))

    def _close_waiting(self, sock: socket.socket) -> None:
        self._stop_waiting(sock)
        self.shutdown_request(sock)

    def _stop_waiting(self, sock: socket.socket) -> None:
        peer, _ = self._waiting.pop(sock)
        self._per_peer[peer] -= 1
        if not self._per_peer[peer]:
            del self._per_peer[peer]
        self._selector.unregister(sock)

    def _first_bytes(self, sock: socket.socket, address: Any) -> None:
        """Something came: a request for a thread, or the end of a connection that sent none."""
        try:
            sent = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except OSError:
            sent = b""
        if not sent:
            self._close_waiting(sock)
            return
        accepted = self._waiting[sock][1]
        self._stop_waiting(sock)
        self._ready.append((sock, address, accepted, time.monotonic()))

    def _dispatch(self) -> None:
        """The connections with a request start a thread each, in order, while slots last."""
        while self._ready:
            sock, address, accepted, since = self._ready[0]
            if self._slots.acquire(blocking=False):
                self._ready.popleft()
                with self._open_lock:
                    self._open[sock] = _Connection(accepted, sock)
                try:
                    super().process_request(sock, address)
                except Exception:  # no thread could be started: this one is given up
                    with self._open_lock:
                        self._open.pop(sock, None)
                    self._slots.release()
                    self.shutdown_request(sock)
            elif time.monotonic() - since > FULL_WAIT_SECONDS:
                self._ready.popleft()
                self._refuse(sock)
            else:
                self._evict()
                return

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._local.connection = self._open[request]
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open.pop(request, None)
            self._slots.release()

    def request_read(self) -> None:
        """Called by the handler once the request line and headers are in."""
        self._local.connection.answering = True

    def answer_headers(self) -> list[tuple[str, str]]:
        """The headers of every answer (the Server header is the handler's own)."""
        app = cast(App, self.get_app())
        return [(name, value) for name, value in app.headers if name != "Server"]

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
        """Between polls of the accept loop: close what waited too long for its first bytes,
        hang up on what is past its request deadline or its connection deadline."""
        now = time.monotonic()
        while self._waiting:
            oldest = next(iter(self._waiting))
            if now - self._waiting[oldest][1] < FIRST_BYTE_SECONDS:
                break
            self._close_waiting(oldest)
        self._hang_up(
            lambda c: (
                now - c.started > CONNECTION_DEADLINE_SECONDS
                or (not c.answering and now - c.started > REQUEST_SECONDS)
            )
        )

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away or timed out is not an error of the exporter: no traceback."""

    def _evict(self) -> None:
        """Every slot is taken: hang up on all that are still sending their request past
        EVICT_AFTER_SECONDS; if none is, on the oldest connection past it."""
        cutoff = time.monotonic() - EVICT_AFTER_SECONDS
        if not self._hang_up(lambda c: not c.answering and c.started < cutoff):
            self._hang_up(lambda c: c.started < cutoff, oldest_only=True)

    def _hang_up(self, late: Callable[[_Connection], bool], oldest_only: bool = False) -> int:
        with self._open_lock:
            chosen = [c for c in self._open.values() if not c.evicted and late(c)]
            if oldest_only:
                chosen = sorted(chosen, key=lambda c: c.started)[:1]
            for connection in chosen:
                connection.evicted = True
        for connection in chosen:
            hang_up(connection.sock)
        return len(chosen)

    def _refuse(self, request: socket.socket) -> None:
        if self.tls is None:  # a TLS client would not understand plain text
            lines = [*BUSY, f"Server: {SERVER_NAME}"]
            lines += [f"{name}: {value}" for name, value in self.answer_headers()]
            with contextlib.suppress(OSError):
                request.sendall("\r\n".join([*lines, "", ""]).encode())
        self.shutdown_request(request)


def _raise_file_limit() -> None:
    """Up to the hard limit, as Go programs do: idle connections wait as file descriptors,
    and a soft limit of 1,024 would be reached before MAX_WAITING is."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FILE_LIMIT if hard == resource.RLIM_INFINITY else min(hard, FILE_LIMIT)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


class HttpServer:
    """The HTTP server in a background thread, so the main thread can wait for signals."""

    def __init__(self, app: App, address: str, port: int, tls: ServerTls | None = None) -> None:
        class Server(_Server):
            """A class of its own: the address family is a class attribute."""

        Server.tls = tls
        _raise_file_limit()
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
        _SWITCH_INTERVAL.serving()
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        _SWITCH_INTERVAL.stopped()


class _SwitchInterval:
    """The process' switch interval is GIL_SWITCH_SECONDS while any server serves (tests and
    benchmarks run several in one process), and its own again once the last one stops."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._servers = 0
        self._before = sys.getswitchinterval()

    def serving(self) -> None:
        with self._lock:
            if not self._servers:
                self._before = sys.getswitchinterval()
                sys.setswitchinterval(GIL_SWITCH_SECONDS)
            self._servers += 1

    def stopped(self) -> None:
        with self._lock:
            self._servers -= 1
            if not self._servers:
                sys.setswitchinterval(self._before)


_SWITCH_INTERVAL = _SwitchInterval()
