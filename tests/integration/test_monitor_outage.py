"""The pass loop through a real outage: the errors redis-py really raises, and what is logged.

A plain restart fails every pass with the same "Connection refused", so the message
changes only when Redis comes back refusing something else: here a rotated password.
"""

import contextlib
import time
from pathlib import Path

import redis
from structlog.testing import capture_logs

from lock_monitor.config import RedisSettings, ScanSettings
from lock_monitor.monitor import Monitor
from tests.servers import RedisServer, mixed_locks, wait_for

PASSWORD = "s3cret-pw"


def test_lost_still_unavailable_only_on_a_new_error_then_recovered(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", None, "--requirepass", PASSWORD).start()
    try:
        settings = RedisSettings(url=server.url, password=PASSWORD, timeout=2)
        monitor = Monitor(settings, ScanSettings(stuck_threshold=30, interval=0.1))
        mixed_locks(server.client(password=PASSWORD), stuck=1, fresh=1)
        with capture_logs() as logs:
            monitor.step()
            server.stop()
            monitor.step()  # refused
            monitor.step()  # refused again: not news
            server.extra_args = ["--requirepass", "rotated-pw"]
            server.start()
            monitor.step()  # up, but our password no longer works: news
            monitor.step()  # the same refusal: not news
            failed = monitor.state
            server.stop()
            server.extra_args = ["--requirepass", PASSWORD]
            server.start()
            monitor.step()
    finally:
        server.stop()
    assert [entry["event"] for entry in logs] == [
        "redis_connected",
        "lock_stuck",
        "redis_lost",
        "redis_still_unavailable",
        "redis_recovered",
        "stuck_lock_cleared",  # the restart kept nothing
    ]
    assert "Connection refused" in str(logs[2]["error"])
    assert "AuthenticationError" in str(logs[3]["error"])
    assert (failed.redis_up, failed.scans_error) == (False, 4)
    assert failed.snapshot is not None
    assert failed.snapshot.active == 2  # the last good pass, kept
    assert "AuthenticationError" in (failed.last_error or "")
    assert monitor.state.redis_up is True
    assert monitor.state.snapshot is not None
    assert monitor.state.snapshot.active == 0
    for text in (str(logs), failed.last_error or ""):
        assert PASSWORD not in text


def test_a_lock_taken_again_after_a_restart_is_aged_afresh(tmp_path: Path) -> None:
    """SHUTDOWN NOSAVE and a restart lose every key: the same token set again is a new lock,
    not one held since before the restart (its age and stuck state would be false)."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        monitor = Monitor(RedisSettings(url=server.url, timeout=2), ScanSettings(stuck_threshold=1))

        def stuck_after_a_pass() -> bool:
            monitor.step()
            return monitor.state.snapshot is not None and monitor.state.snapshot.stuck == 1

        server.client().set("lock:appointment:t", "token")
        wait_for(stuck_after_a_pass, what="the token lock stuck")
        with contextlib.suppress(redis.ConnectionError):
            server.client(retry=None).shutdown(nosave=True)
        server.stop()
        server.start()
        server.client().set("lock:appointment:t", "token")
        restarted = time.time()

        def a_pass_since() -> bool:
            monitor.step()  # the first one may meet the old connection, closed
            snapshot = monitor.state.snapshot
            return snapshot is not None and snapshot.completed_at > restarted

        wait_for(a_pass_since, what="a pass after the restart")
    finally:
        server.stop()
    snapshot = monitor.state.snapshot
    assert snapshot is not None
    assert (snapshot.active, snapshot.stuck) == (1, 0)
    assert snapshot.oldest[0].age_seconds < 1
