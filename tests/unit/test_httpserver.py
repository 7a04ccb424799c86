import collections
import contextlib
import http.client
import select
import selectors
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from prometheus_client import exposition
from prometheus_client.parser import text_string_to_metric_families

from lock_monitor.httpserver import (
    FIRST_BYTE_SECONDS,
    FULL_WAIT_SECONDS,
    GIL_SWITCH_SECONDS,
    MAX_CONNECTIONS,
    HttpServer,
)
from lock_monitor.monitor import MonitorState
from lock_monitor.web import CONTENT_SECURITY_POLICY
from tests.unit.webapps import UP, make_app, snapshot


def test_client_python_still_has_the_server_pieces_httpserver_builds_on() -> None:
    """httpserver.py imports private names of prometheus_client.exposition (the pieces of its own
    start_wsgi_server): a release that renames one must fail here, saying which."""
    for name in ("ThreadingWSGIServer", "_SilentHandler", "_get_best_family"):
        gone = f"prometheus_client.exposition.{name} is gone: see httpserver.py"
        assert hasattr(exposition, name), gone
    assert exposition.ThreadingWSGIServer.daemon_threads  # a slow client cannot hold up shutdown


@pytest.mark.parametrize(
    ("address", "url_host"),
    [("127.0.0.1", "127.0.0.1"), ("::1", "[::1]"), ("localhost", "localhost")],
)
def test_server_answers_on_ipv4_ipv6_and_a_host_name(
    address: str, url_host: str, capfd: pytest.CaptureFixture[str]
) -> None:
    server = HttpServer(make_app(MonitorState(redis_up=True, snapshot=snapshot(1))), address, 0)
    server.start()
    try:
        with urllib.request.urlopen(f"http://{url_host}:{server.port}/healthz", timeout=5) as r:
            assert r.read() == b"ok\n"
    finally:
        server.stop()
    assert capfd.readouterr().err == ""  # scrapes are not logged


PATHS = ["/", "/locks", "/metrics", "/healthz", "/readyz", "/nope"]


@contextmanager
def serving(state: MonitorState = UP) -> Iterator[HttpServer]:
    server = HttpServer(make_app(state), "127.0.0.1", 0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def request(
    server: HttpServer, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("path", PATHS)
def test_every_response_carries_the_security_headers(path: str) -> None:
    with serving() as server:
        response, _ = request(server, "GET", path)
    assert response.getheader("Content-Security-Policy") == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    assert response.getheader("X-Frame-Options") == "DENY"
    assert response.getheader("Server") == "lock-monitor"


@pytest.mark.parametrize("path", PATHS)
def test_head_is_a_get_without_the_body(path: str) -> None:
    with serving() as server:
        got, body = request(server, "GET", path)
        head, nothing = request(server, "HEAD", path)
    assert nothing == b""
    assert head.status == got.status
    assert head.getheader("Content-Type") == got.getheader("Content-Type")
    length = int(head.getheader("Content-Length") or -1)
    assert length > 0
    if path in ("/healthz", "/nope"):  # the others hold times, which may change in length
        assert length == len(body)


def test_a_malformed_request_is_answered_without_naming_python() -> None:
    with serving() as server, socket.create_connection(("127.0.0.1", server.port), 5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n")  # too many headers
        answer = sock.recv(65536).decode()
    assert answer.startswith("HTTP/1.0 431")
    assert "Server: lock-monitor\r\n" in answer
    assert "Python" not in answer


def test_metrics_by_name_over_http() -> None:
    with serving() as server:
        _, body = request(server, "GET", "/metrics?name%5B%5D=stuck_locks_count")
    [family] = text_string_to_metric_families(body.decode())
    assert family.name == "stuck_locks_count"
    assert [sample.name for sample in family.samples] == ["stuck_locks_count"]


SCRAPE = b"GET /metrics HTTP/1.1\r\nHost: exporter\r\nConnection: close\r\n\r\n"


def scrape_all_at_once(port: int, count: int, timeout: float = 10.0) -> list[int | None]:
    """`count` scrapes started together from one thread (non-blocking sockets, so they really
    are concurrent): each one's HTTP status, None where none came within `timeout`."""
    selector = selectors.DefaultSelector()
    for index in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        selector.register(sock, selectors.EVENT_WRITE, (index, bytearray()))
    statuses: list[int | None] = [None] * count
    deadline = time.monotonic() + timeout
    while selector.get_map() and time.monotonic() < deadline:
        for key, events in selector.select(timeout=max(0.0, deadline - time.monotonic())):
            sock, (index, received) = key.fileobj, key.data
            assert isinstance(sock, socket.socket)
            try:
                if events & selectors.EVENT_WRITE:
                    sock.sendall(SCRAPE)
                    selector.modify(sock, selectors.EVENT_READ, key.data)
                    continue
                chunk = sock.recv(65536)
            except OSError:
                chunk = b""
            if chunk:
                received += chunk
                continue
            statuses[index] = int(received.split(b" ", 2)[1]) if received else 0
            selector.unregister(sock)
            sock.close()
    for key in list(selector.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    return statuses


def test_500_concurrent_scrapes_are_all_answered() -> None:
    with serving() as server:
        started = time.monotonic()
        statuses = scrape_all_at_once(server.port, 500)
        elapsed = time.monotonic() - started
    assert statuses.count(200) == 500, collections.Counter(statuses)
    assert elapsed < 5


@contextmanager
def slow_clients(port: int, count: int) -> Iterator[list[socket.socket]]:
    """Clients that send half a request and then nothing, as a slowloris does."""
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
    try:
        for client in clients:
            client.sendall(b"GET /metrics HTTP/1.1\r\nHost: exporter\r\n")
        yield clients
    finally:
        for client in clients:
            client.close()


def test_metrics_stay_responsive_under_200_slow_clients_with_bounded_threads() -> None:
    threads_before = threading.active_count()
    with serving() as server, slow_clients(server.port, 200):
        for _ in range(10):
            started = time.monotonic()
            response, body = request(server, "GET", "/metrics")
            assert response.status == 200
            assert b"stuck_locks_count" in body
            assert time.monotonic() - started < FULL_WAIT_SECONDS + 1
        assert threading.active_count() <= threads_before + MAX_CONNECTIONS + 2


def test_a_trickling_client_is_hung_up_on_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lock_monitor.httpserver.CONNECTION_DEADLINE_SECONDS", 1.0)
    with serving() as server, slow_clients(server.port, 1) as [client]:
        started = time.monotonic()
        answer = b"x"
        while answer and time.monotonic() - started < 5:
            with contextlib.suppress(OSError):  # hung up on: a reset, or an end of file
                client.sendall(b"X")  # a byte of a header, well within the idle timeout
                ready, _, _ = select.select([client], [], [], 0.3)
                answer = client.recv(100) if ready else b"x"
        assert answer == b""
        assert 1.0 <= time.monotonic() - started < 3


class IdleSockets:
    """Connections that never send a byte, kept at `count` open: each one the server closes
    is opened again by `top_up`, as a flood of idle sockets would."""

    def __init__(self, port: int, count: int) -> None:
        self.port, self.count = port, count
        self.sockets: list[socket.socket] = []

    def top_up(self) -> None:
        with selectors.DefaultSelector() as selector:
            for sock in self.sockets:
                selector.register(sock, selectors.EVENT_READ)
            closed = {key.fileobj for key, _ in selector.select(0)}  # readable: the server's EOF
        for sock in closed:
            assert isinstance(sock, socket.socket)
            sock.close()
        self.sockets = [sock for sock in self.sockets if sock not in closed]
        while len(self.sockets) < self.count:
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", self.port))
            self.sockets.append(sock)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def test_metrics_stay_fast_with_1000_idle_sockets_held_open() -> None:
    """Idle sockets wait without a thread and are closed oldest first: a scrape is not queued
    behind them (it took seconds while each held a thread until evicted one at a time)."""
    threads_before = threading.active_count()
    with serving() as server:
        flood = IdleSockets(server.port, 1000)
        try:
            for _ in range(5):
                flood.top_up()
                started = time.monotonic()
                response, body = request(server, "GET", "/metrics")
                assert response.status == 200
                assert b"stuck_locks_count" in body
                assert time.monotonic() - started < 1.0
                assert threading.active_count() <= threads_before + 3  # the loop, the scrape
        finally:
            flood.close()


def test_a_silent_connection_is_closed_after_a_second() -> None:
    with serving() as server, socket.create_connection(("127.0.0.1", server.port), 5) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed, without a word
        assert FIRST_BYTE_SECONDS <= time.monotonic() - started < FIRST_BYTE_SECONDS + 1


@pytest.mark.parametrize(
    ("sent", "status"),
    [
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET / HTTP/x.y\r\n\r\n", 400),
        (b"GET /\r\n\r\n", 505),  # HTTP/0.9: its answer would have no headers
        (b"GET /" + b"x" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
    ],
)
def test_the_standard_librarys_own_errors_carry_the_security_headers(
    sent: bytes, status: int
) -> None:
    with serving() as server, socket.create_connection(("127.0.0.1", server.port), 5) as sock:
        sock.sendall(sent)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head = answer.decode().split("\r\n\r\n")[0].split("\r\n")
    assert head[0].startswith(f"HTTP/1.0 {status} ")
    headers = dict(line.split(": ", 1) for line in head[1:])
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Server"] == "lock-monitor"


def test_the_switch_interval_is_short_while_any_server_serves() -> None:
    """Behind a pass busy in Python, each of a scrape's steps waited for the GIL up to the
    interval (docs/performance.md, (c): `make bench` measures what it is worth)."""
    before = sys.getswitchinterval()
    first, second = (HttpServer(make_app(UP), "127.0.0.1", 0) for _ in range(2))
    first.start()
    assert sys.getswitchinterval() == pytest.approx(GIL_SWITCH_SECONDS)
    second.start()
    first.stop()
    assert sys.getswitchinterval() == pytest.approx(GIL_SWITCH_SECONDS)  # the second serves
    second.stop()
    assert sys.getswitchinterval() == before
