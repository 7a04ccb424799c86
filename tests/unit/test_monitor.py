"""The pass loop's bookkeeping: counts, transitions, logs, and the cap on stuck-lock lines.

Redis is replaced at the narrowest seam, `read_locks`: it hands over hand-built locks, or
raises what redis-py raises from a pass. The client itself is the real lazy one (`connect`
never touches the network for a standalone URL), so a failure arrives where it does in
production: on the first read of a pass. What Redis itself does is tested in
tests/integration (test_scanner.py, test_monitor_outage.py).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from lock_monitor.config import RedisSettings, ScanSettings
from lock_monitor.locks import RawLock
from lock_monitor.monitor import Monitor

SETTINGS = RedisSettings(url="redis://example:6379/0", password="s3cret-pw")
NOW = 1_800_000_000.0  # Redis TIME of every pass here


def held(key: str, seconds_ago: float, pttl_ms: int = 30_000) -> RawLock:
    """A lock as the backend takes it: epoch-ms value and a TTL."""
    return RawLock(key.encode(), b"%d" % ((NOW - seconds_ago) * 1000), pttl_ms, "string", NOW)


class FakeScanner:
    """Stands in for `read_locks`: every pass yields `locks`, or fails with `error`."""

    def __init__(self) -> None:
        self.locks: list[RawLock] = []
        self.error: Exception | None = None

    def __call__(
        self, client: redis.Redis, pattern: str, count: int, seen: set[bytes], cluster: bool
    ) -> Iterator[RawLock]:
        if self.error is not None:
            raise self.error  # a generator: raised on the first read, as redis-py does
        for raw in self.locks:
            seen.add(raw.key)
            yield raw


@pytest.fixture
def redis_node(monkeypatch: pytest.MonkeyPatch) -> FakeScanner:
    scanner = FakeScanner()
    monkeypatch.setattr("lock_monitor.monitor.read_locks", scanner)
    return scanner


def make(settings: RedisSettings = SETTINGS) -> Monitor:
    return Monitor(settings, ScanSettings(stuck_threshold=30, interval=5))


def events(logs: list[MutableMapping[str, Any]]) -> list[Any]:
    return [entry["event"] for entry in logs]


def test_a_pass_counts_what_it_reads_and_logs_the_first_connection(
    redis_node: FakeScanner,
) -> None:
    redis_node.locks = [
        held("lock:appointment:1", 60),
        held("lock:appointment:2", 1),
        RawLock(b"lock:appointment:3", b"token", -1, "string", NOW),  # no TTL
        RawLock(b"lock:appointment:4", None, -1, "hash", NOW),  # a Redisson lock
    ]
    monitor = make()
    with capture_logs() as logs:
        assert monitor.step() == 5
    snap = monitor.state.snapshot
    assert snap is not None
    assert (snap.active, snap.stuck, snap.without_ttl, snap.keys_scanned) == (4, 1, 2, 4)
    assert snap.oldest[0].key == "lock:appointment:1"
    assert (monitor.state.redis_up, monitor.state.scans_success) == (True, 1)
    assert events(logs) == ["redis_connected", "lock_stuck"]
    assert logs[1]["key"] == "lock:appointment:1"


def test_outage_then_recovery_logs_each_change_once(redis_node: FakeScanner) -> None:
    monitor = make()
    monitor.step()
    with capture_logs() as logs:
        redis_node.error = redis.ConnectionError("Connection closed by server.")
        monitor.step()  # the open connection breaks
        redis_node.error = redis.ConnectionError(
            "Error 111 connecting to example:6379. Connection refused."
        )
        monitor.step()  # reconnecting is refused: a different error, logged once
        monitor.step()  # the same error again: not news
    state = monitor.state
    assert events(logs) == ["redis_lost", "redis_still_unavailable"]
    assert "Connection closed" in str(logs[0]["error"])
    assert "Connection refused" in str(logs[1]["error"])
    assert state.redis_up is False
    assert state.snapshot is not None  # the last success is kept for last_check_timestamp
    assert (state.scans_success, state.scans_error) == (1, 3)
    assert "Connection refused" in (state.last_error or "")
    assert "s3cret-pw" not in str(logs)

    redis_node.error = None
    with capture_logs() as logs:
        monitor.step()
    assert events(logs) == ["redis_recovered"]
    assert (monitor.state.redis_up, monitor.state.last_error) == (True, None)


def test_unavailable_from_the_start(redis_node: FakeScanner) -> None:
    redis_node.error = redis.ConnectionError("Error 111 connecting to example:6379.")
    monitor = make()
    with capture_logs() as logs:
        delay = monitor.step()
    assert monitor.state.redis_up is False
    assert monitor.state.snapshot is None
    assert events(logs) == ["redis_unavailable"]
    assert 0 < delay <= 1.0  # the first retry comes soon


def test_passwords_are_scrubbed_from_errors_in_logs_and_state(redis_node: FakeScanner) -> None:
    settings = RedisSettings(url=SETTINGS.url, password="s3cret-pw", sentinel_password="sent-pw")
    redis_node.error = redis.AuthenticationError("refused s3cret-pw (sentinel said sent-pw)")
    monitor = make(settings)
    with capture_logs() as logs:
        monitor.step()
    last_error = monitor.state.last_error or ""
    assert "refused *** (sentinel said ***)" in last_error
    assert "refused *** (sentinel said ***)" in str(logs[0]["error"])
    for secret in ("s3cret-pw", "sent-pw"):
        assert secret not in last_error
        assert secret not in str(logs)


def test_stuck_locks_are_logged_when_they_become_stuck_and_when_they_clear(
    redis_node: FakeScanner,
) -> None:
    redis_node.locks = [held("lock:appointment:9", 40), held("lock:appointment:1", 1)]
    monitor = make()
    with capture_logs() as logs:
        monitor.step()
    assert [entry["key"] for entry in logs if entry["event"] == "lock_stuck"] == [
        "lock:appointment:9"
    ]
    with capture_logs() as logs:
        monitor.step()
    assert logs == []  # still stuck: not news
    redis_node.locks = [held("lock:appointment:1", 1)]  # the stuck one is released
    with capture_logs() as logs:
        monitor.step()
    assert events(logs) == ["stuck_lock_cleared"]
    assert logs[0]["key"] == "lock:appointment:9"
    assert logs[0]["last_age_seconds"] == 40


def test_many_stuck_locks_are_summed_up_not_flooded(redis_node: FakeScanner) -> None:
    redis_node.locks = [held(f"lock:appointment:{i}", 40) for i in range(50)]
    monitor = make()
    with capture_logs() as logs:
        monitor.step()
    assert events(logs) == ["redis_connected"] + ["lock_stuck"] * 20 + ["stuck_locks_changed"]
    assert (logs[-1]["became_stuck"], logs[-1]["cleared"], logs[-1]["stuck"]) == (50, 0, 50)

    redis_node.locks = []  # all released at once
    with capture_logs() as logs:
        monitor.step()
    assert events(logs) == ["stuck_lock_cleared"] * 20 + ["stuck_locks_changed"]
    assert (logs[-1]["became_stuck"], logs[-1]["cleared"], logs[-1]["stuck"]) == (0, 50, 0)
