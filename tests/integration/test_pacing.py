"""Pacing counts Redis' own time (INFO commandstats), not time spent waiting on Redis: after a
stall, a pause or behind a slow link the next pass comes at the normal interval; a pass that
costs Redis real work is still paced; without +info the wall time stands in."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.servers import (
    MonitorProcess,
    RedisServer,
    mixed_locks,
    monitor_env,
    redis_server,
    running_monitor,
    wait_for,
)

pytestmark = pytest.mark.integration

INTERVAL = 0.5
ARGS = ("--interval", str(INTERVAL), "--redis-timeout", "5")


def document(monitor: MonitorProcess) -> dict[str, Any]:
    status, body = monitor.get("/locks")
    assert status == 200
    return json.loads(body)  # type: ignore[no-any-return]


def long_pass(monitor: MonitorProcess, hold_up: Any) -> dict[str, Any]:
    """Hold Redis up (in a thread) until a pass takes over a second; that pass's document."""

    def seen() -> dict[str, Any] | None:
        threading.Thread(target=hold_up, daemon=True).start()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            doc = document(monitor)
            if doc["pass"] and doc["pass"]["duration_seconds"] > 1.0:
                return doc
            time.sleep(0.05)
        return None

    return wait_for(seen, timeout=20, what="a pass held up for over a second")


@pytest.fixture
def debuggable(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis", "--enable-debug-command", "yes") as server:
        mixed_locks(server.client(), stuck=2, fresh=3)
        yield server


@pytest.mark.parametrize(
    "hold_up",
    [("DEBUG", "SLEEP", "1.5"), ("CLIENT", "PAUSE", "1500", "ALL")],
    ids=["stall", "pause"],
)
def test_a_stalled_or_paused_redis_leaves_the_next_pass_at_the_interval(
    debuggable: RedisServer, hold_up: tuple[str, ...]
) -> None:
    with running_monitor("--redis-url", debuggable.url, *ARGS) as monitor:
        wait_for(lambda: document(monitor)["pass"], what="a first pass")
        doc = long_pass(monitor, lambda: debuggable.client().execute_command(*hold_up))
        assert doc["next_pass_delay_seconds"] == INTERVAL
        assert doc["pacing_active"] is False
        assert doc["pass"]["active"] == 5


@contextmanager
def slow_link(upstream_port: int, delay: float) -> Iterator[int]:
    """A TCP proxy on loopback that holds every chunk `delay` seconds, each way."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with source, sink:
            while not stop.is_set():
                try:
                    chunk = source.recv(65536)
                    time.sleep(delay)  # the link's latency, not a wait for a condition
                    if not chunk:
                        return
                    sink.sendall(chunk)
                except OSError:
                    return

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", upstream_port))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=pump, args=(source, sink), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()


def test_a_slow_link_leaves_the_next_pass_at_the_interval(redis_srv: RedisServer) -> None:
    client = redis_srv.client()
    mixed_locks(client, stuck=1, fresh=60)
    with slow_link(redis_srv.port, delay=0.04) as port:
        url = f"redis://127.0.0.1:{port}/0"
        with running_monitor("--redis-url", url, "--scan-count", "5", *ARGS) as monitor:
            doc = wait_for(lambda: document(monitor)["pass"] and document(monitor), what="a pass")
            assert doc["pass"]["duration_seconds"] > 1.0  # many round trips of 80 ms
            assert doc["next_pass_delay_seconds"] == INTERVAL
            assert doc["pacing_active"] is False


def test_a_pass_that_costs_redis_real_work_is_still_paced(redis_srv: RedisServer) -> None:
    client = redis_srv.client()
    for start in range(0, 60_000, 10_000):
        client.mset({f"other:{i}": "x" for i in range(start, start + 10_000)})
    mixed_locks(client, stuck=1, fresh=1)
    # Redis spends tens of milliseconds on a pass over 60,000 keys; at 0.1 % of its time
    # that asks for a wait of many seconds, within the cap.
    args = ("--max-redis-load", "0.001", *ARGS)
    with running_monitor("--redis-url", redis_srv.url, *args) as monitor:
        doc = wait_for(lambda: document(monitor)["pass"] and document(monitor), what="a pass")
        assert doc["pacing_active"] is True
        assert 5 < doc["next_pass_delay_seconds"] <= 60


def test_without_info_the_wall_time_stands_in(redis_srv: RedisServer) -> None:
    client = redis_srv.client()
    mixed_locks(client, stuck=1, fresh=1)
    client.acl_setuser(
        "lockmon",
        enabled=True,
        passwords=["+pw"],
        keys=["lock:*"],
        commands=[
            "-@all",
            "+scan",
            "+getrange",
            "+pttl",
            "+type",
            "+exists",
            "+time",
            "+ping",
            "+client",
        ],
    )
    env = monitor_env(REDIS_PASSWORD="pw")
    args = ("--redis-url", redis_srv.url, "--redis-username", "lockmon", *ARGS)
    with running_monitor(*args, env=env) as monitor:
        wait_for(lambda: monitor.value("active_locks_count") == 2, what="a pass without INFO")
    assert [e["event"] for e in monitor.events()].count("pacing_on_wall_time") == 1
