"""`lock-monitor run` against servers a real Redis will not imitate, scripted in tests/resp.py:
a megabyte in an error text, replies dripped a byte at a time, a SCAN cursor that never ends."""

from __future__ import annotations

import itertools
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from lock_monitor import config
from lock_monitor.config import RedisSettings, ScanSettings
from lock_monitor.connection import connect
from lock_monitor.passes import PassFailed, read_pass
from lock_monitor.stuck_log import StuckMemory
from lock_monitor.tracker import LockTracker
from tests.resp import Drip, Error, default_reply, encode, fake_redis
from tests.servers import running_monitor, wait_for

pytestmark = pytest.mark.integration

FAST = ("--interval", "0.2", "--redis-timeout", "1")


def fetch(base: str, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(base + path, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_a_megabyte_error_text_is_cut_everywhere_it_shows() -> None:
    huge = "ERR " + "A" * 1_000_000

    def handler(command: list[bytes]) -> object:
        return "OK" if command[0] == b"CLIENT" else Error(huge)

    with fake_redis(handler) as server, running_monitor("--redis-url", server.url, *FAST) as mon:
        wait_for(lambda: mon.value("lock_monitor_scans_total", result="error"), what="a failure")
        status, headers, ready = fetch(mon.base, "/readyz")
        assert status == 503
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert 0 < len(ready) < 1000
        assert len(fetch(mon.base, "/")[2]) < 10_000
        error = json.loads(fetch(mon.base, "/locks")[2])["last_error"]
        assert error.startswith(f"{server.url}: ResponseError: AAA")
        assert error.endswith("A…")
        assert len(error) < 1000
    assert all(len(line) < 2000 for line in mon.log_lines)
    assert any("AAA" in line for line in mon.log_lines)


class Keyspace:
    """A fake node's keyspace: one fresh lock, read as a real Redis would answer, until
    `hostile` scripts the SCAN reply instead."""

    def __init__(self) -> None:
        self.hostile: Callable[[list[bytes]], object] | None = None

    def __call__(self, command: list[bytes]) -> object:
        now = time.time()
        if command[0] == b"SCAN" and self.hostile is not None:
            return self.hostile(command)
        replies: dict[bytes, object] = {
            b"TIME": [str(int(now)).encode(), b"0"],
            b"SCAN": [b"0", [b"lock:appointment:1"]],
            b"GETRANGE": encode(str(int(now * 1000)).encode()),  # bytes alone go out raw
            b"PTTL": 30_000,
        }
        return replies.get(command[0], default_reply(command))


# A SCAN reply that never ends: an array whose last element is a bulk of 100 MB, dripped.
ENDLESS = b"*2\r\n$1\r\n0\r\n*1\r\n$100000000\r\n" + b"x" * 10_000


def test_a_dripping_server_fails_the_pass_at_the_deadline() -> None:
    """A byte every 0.2 s keeps every socket timeout from firing; --pass-timeout still ends the
    pass, and the gauges follow the rules for a failed pass."""
    keyspace = Keyspace()
    args = ("--interval", "0.2", "--redis-timeout", "5", "--pass-timeout", "1")
    with fake_redis(keyspace) as server, running_monitor("--redis-url", server.url, *args) as mon:
        wait_for(lambda: mon.value("active_locks_count") == 1, what="a good pass")
        keyspace.hostile = lambda command: Drip(ENDLESS, every=0.2)
        started = time.monotonic()
        wait_for(lambda: mon.value("lock_monitor_redis_up") == 0, timeout=10, what="redis_up 0")
        assert time.monotonic() - started < 4
        metrics = mon.metrics()
        assert not {"active_locks_count", "stuck_locks_count"} & set(metrics)
        error = json.loads(fetch(mon.base, "/locks")[2])["last_error"]
        assert error.endswith("the pass took longer than --pass-timeout (1s)")


@pytest.mark.parametrize(
    ("page", "cap", "reason"),
    [
        ((b"1", [b"lock:appointment:%d"]), "MAX_KEYS_PER_PASS", "more than 1,000 keys match"),
        ((b"1", []), "MAX_PAGES_PER_PASS", "more than 1,000 pages in one pass"),
    ],
)
def test_a_scan_cursor_that_never_returns_to_0_ends_the_pass(
    monkeypatch: pytest.MonkeyPatch, page: tuple[bytes, list[bytes]], cap: str, reason: str
) -> None:
    monkeypatch.setattr(config, cap, 1000)
    pages = itertools.count()
    keyspace = Keyspace()
    keyspace.hostile = lambda command: [page[0], [key % next(pages) for key in page[1]]]
    with fake_redis(keyspace) as server:
        target = connect(RedisSettings(url=server.url))
        with pytest.raises(PassFailed) as failed:
            read_pass(target, ScanSettings(), LockTracker(30), StuckMemory())
        target.close()
    [message] = failed.value.failures.values()
    assert reason in message
