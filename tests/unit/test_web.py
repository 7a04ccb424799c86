import collections
import contextlib
import http.client
import json
import select
import selectors
import socket
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from wsgiref.util import setup_testing_defaults

import pytest
from prometheus_client import exposition
from prometheus_client.parser import text_string_to_metric_families

import lock_monitor
from lock_monitor.events import EventsStatus, EventsView
from lock_monitor.livecounts import LiveCounts
from lock_monitor.liveset import LiveSet
from lock_monitor.locks import Lock
from lock_monitor.metrics import build_registry
from lock_monitor.monitor import MonitorState
from lock_monitor.snapshot import Snapshot
from lock_monitor.web import (
    CONTENT_SECURITY_POLICY,
    FIRST_BYTE_SECONDS,
    FULL_WAIT_SECONDS,
    GIL_SWITCH_SECONDS,
    MAX_CONNECTIONS,
    App,
    HttpServer,
    readiness,
)

NOW = 1_800_000_000.0
EVIL = Lock("lock:appointment:<script>", "<b>x</b>", "string", None, 40.0, "value", True)


def snapshot(seconds_ago: float) -> Snapshot:
    return Snapshot(NOW - seconds_ago, 0.1, 1, 1, 1, 1, (EVIL,))


def make_app(state: MonitorState, alive: bool = True, events: EventsView | None = None) -> App:
    view = None if events is None else lambda shown=(): events
    return App(
        lambda: state,
        lambda: alive,
        build_registry(lambda: state, "standalone", view),
        "redis://redis:6379/0",
        "standalone",
        interval=5,
        events=view,
    )


def call(
    state: MonitorState,
    path: str,
    alive: bool = True,
    method: str = "GET",
    query: str = "",
    events: EventsView | None = None,
) -> tuple[str, dict[str, str], str]:
    app = make_app(state, alive, events)
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": method, "QUERY_STRING": query}
    setup_testing_defaults(environ)
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        captured["status"], captured["headers"] = status, dict(headers)

    body = b"".join(app(environ, start_response)).decode()
    return captured["status"], captured["headers"], body


def test_readiness_rules() -> None:
    assert readiness(MonitorState(), 5, NOW) == "no successful pass yet"
    assert readiness(MonitorState(redis_up=True, snapshot=snapshot(14)), 5, NOW) is None
    late = readiness(MonitorState(redis_up=False, snapshot=snapshot(16), last_error="boom"), 5, NOW)
    assert late is not None
    assert "16.0s ago" in late
    assert "boom" in late


def test_readiness_never_outlasts_the_stale_alert() -> None:
    """A long pass and the longest paced wait: ready for 3 such cycles would be 5 minutes."""
    paced = MonitorState(redis_up=True, snapshot=snapshot(106), delay_seconds=60, paced=True)
    late = readiness(replace(paced, snapshot=Snapshot(NOW - 106, 40, 1, 1, 1, 1, ())), 5, NOW)
    assert late is not None
    assert "limit 105.0s" in late
    assert readiness(MonitorState(redis_up=True, snapshot=snapshot(400)), 300, NOW) is None


def test_readiness_allows_for_pacing() -> None:
    paced = MonitorState(redis_up=True, snapshot=snapshot(50), delay_seconds=20, paced=True)
    assert readiness(paced, 5, NOW) is None


@pytest.mark.parametrize(
    ("alive", "status"), [(True, "200 OK"), (False, "503 Service Unavailable")]
)
def test_healthz_follows_the_loop(alive: bool, status: str) -> None:
    assert call(MonitorState(), "/healthz", alive=alive)[0] == status


def test_readyz_says_why() -> None:
    status, _, body = call(MonitorState(redis_up=False, last_error="refused"), "/readyz")
    assert status.startswith("503")
    assert "refused" in body


def test_status_page_is_html() -> None:
    status, headers, body = call(MonitorState(redis_up=True, snapshot=snapshot(1)), "/")
    assert status == "200 OK"
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert "&lt;script&gt;" in body  # rendered by views.status_page, escaped


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("page.js", "text/javascript; charset=utf-8"), ("page.css", "text/css; charset=utf-8")],
)
def test_the_page_script_and_style_are_served_from_the_package(
    name: str, content_type: str
) -> None:
    status, headers, body = call(MonitorState(), f"/static/{name}")
    assert (status, headers["Content-Type"]) == ("200 OK", content_type)
    assert body == (Path(lock_monitor.__file__).parent / "static" / name).read_text()
    assert call(MonitorState(), "/static/../web.py")[0].startswith("404")


def test_locks_json() -> None:
    _, headers, body = call(MonitorState(redis_up=True, snapshot=snapshot(1)), "/locks")
    document = json.loads(body)
    assert headers["Content-Type"] == "application/json"
    assert document["pass"]["stuck"] == 1
    assert document["locks"][0]["key"] == "lock:appointment:<script>"
    assert document["locks"][0]["ttl_seconds"] is None


def test_metrics_and_unknown_paths() -> None:
    status, _, body = call(MonitorState(redis_up=True, snapshot=snapshot(1)), "/metrics")
    assert status == "200 OK"
    assert "stuck_locks_count 1.0" in body
    assert call(MonitorState(), "/nope")[0].startswith("404")


def test_client_python_still_has_the_server_pieces_web_py_builds_on() -> None:
    """web.py imports private names of prometheus_client.exposition (the pieces of its own
    start_wsgi_server): a release that renames one must fail here, saying which."""
    for name in ("ThreadingWSGIServer", "_SilentHandler", "_get_best_family"):
        assert hasattr(exposition, name), f"prometheus_client.exposition.{name} is gone: see web.py"
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


UP = MonitorState(redis_up=True, snapshot=snapshot(1))
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


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"])
@pytest.mark.parametrize("path", ["/", "/metrics", "/healthz", "/nope"])
def test_other_methods_are_not_allowed(method: str, path: str) -> None:
    status, headers, _ = call(UP, path, method=method)
    assert status == "405 Method Not Allowed"
    assert headers["Allow"] == "GET, HEAD"
    assert headers["X-Frame-Options"] == "DENY"


def test_a_malformed_request_is_answered_without_naming_python() -> None:
    with serving() as server, socket.create_connection(("127.0.0.1", server.port), 5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n")  # too many headers
        answer = sock.recv(65536).decode()
    assert answer.startswith("HTTP/1.0 431")
    assert "Server: lock-monitor\r\n" in answer
    assert "Python" not in answer


def families(text: str) -> dict[str, list[str]]:
    """Family name -> its sample names, parsed by prometheus_client."""
    return {
        family.name: [sample.name for sample in family.samples]
        for family in text_string_to_metric_families(text)
    }


# Keyspace events followed and live: their metrics are in every scrape.
LIVE_EVENTS = EventsView(
    EventsStatus("auto", "live", None, (("redis:6379", "up"),), ever_live=True, reconnects=0),
    LiveCounts(1, 1, 1, 40.0),
    LiveSet(stuck_threshold=30).counters(),
)


def test_metrics_can_be_asked_for_by_name_as_prometheus_clients_do() -> None:
    """`name[]=` as a federating Prometheus or a script sends it (URL-encoded brackets): every
    family a full scrape holds can be asked for alone, and several together."""
    everything = families(call(UP, "/metrics", events=LIVE_EVENTS)[2])
    assert {
        "stuck_locks_count",
        "lock_monitor_scans",
        "process_resident_memory_bytes",
        "lock_monitor_events_up",
        "lock_monitor_lock_releases",
        "lock_monitor_lock_hold_seconds",
    } <= set(everything)
    for family, samples in everything.items():
        for sample in samples:
            query = urlencode({"name[]": sample})
            alone = families(call(UP, "/metrics", query=query, events=LIVE_EVENTS)[2])
            assert list(alone) == [family], sample
    query = urlencode([("name[]", "active_locks_count"), ("name[]", "lock_monitor_build_info")])
    assert set(families(call(UP, "/metrics", query=query)[2])) == {
        "active_locks_count",
        "lock_monitor_build_info",
    }


def test_metrics_by_name_over_http() -> None:
    with serving() as server:
        _, body = request(server, "GET", "/metrics?name%5B%5D=stuck_locks_count")
    assert families(body.decode()) == {"stuck_locks_count": ["stuck_locks_count"]}


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
    monkeypatch.setattr("lock_monitor.web.CONNECTION_DEADLINE_SECONDS", 1.0)
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


def test_a_scrape_does_not_wait_out_a_busy_thread_at_each_step() -> None:
    """A thread busy in Python (as a pass is) keeps the GIL until another has waited the
    switch interval; a scrape takes it at each step (accept, read, answer), and so does this
    test's client."""
    busy, before = threading.Event(), sys.getswitchinterval()

    def spin() -> None:
        while not busy.is_set():
            sum(range(1000))

    with serving() as server:
        spinner = threading.Thread(target=spin)
        spinner.start()
        try:
            times = []
            for _ in range(21):
                started = time.perf_counter()
                response, _ = request(server, "GET", "/metrics")
                assert response.status == 200
                times.append(time.perf_counter() - started)
        finally:
            busy.set()
            spinner.join()
        assert sys.getswitchinterval() == pytest.approx(GIL_SWITCH_SECONDS)
    assert sys.getswitchinterval() == before  # the process' own, back when the server stops
    assert statistics.median(times) < 0.020  # about 4 ms; over 50 ms at Python's default
