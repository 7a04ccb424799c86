"""The pass loop's bookkeeping, against fakeredis: transitions, logs, backoff, pacing."""

import fakeredis
import pytest
import redis
from structlog.testing import capture_logs

from lock_monitor.config import RedisSettings, ScanSettings
from lock_monitor.connection import Target
from lock_monitor.monitor import Monitor

SETTINGS = RedisSettings(url="redis://example:6379/0", password="s3cret-pw")


class Switchable:
    """A connector whose Redis can be taken away and given back."""

    def __init__(self) -> None:
        self.server = fakeredis.FakeServer()
        self.client = fakeredis.FakeRedis(server=self.server)

    def __call__(self, settings: RedisSettings) -> Target:
        if not self.server.connected:
            raise redis.ConnectionError("Error 111 connecting to example:6379 (s3cret-pw)")
        return Target(settings, fakeredis.FakeRedis(server=self.server))


def make(
    threshold: float = 30, interval: float = 5, load: float = 0.05
) -> tuple[Monitor, Switchable]:
    connector = Switchable()
    scan = ScanSettings(stuck_threshold=threshold, interval=interval, max_redis_load=load)
    return Monitor(SETTINGS, scan, connector=connector), connector


def epoch_ms(client: fakeredis.FakeRedis, seconds_ago: float) -> bytes:
    seconds, micros = client.time()
    return b"%d" % ((seconds + micros / 1e6 - seconds_ago) * 1000)


def test_a_pass_counts_locks_of_every_kind() -> None:
    monitor, conn = make()
    conn.client.set("lock:appointment:1", epoch_ms(conn.client, 60), px=30_000)
    conn.client.set("lock:appointment:2", epoch_ms(conn.client, 1), px=30_000)
    conn.client.set("lock:appointment:3", "token")  # no TTL
    conn.client.hset("lock:appointment:4", "uuid:1", 1)  # a Redisson lock
    conn.client.set("session:1", "not a lock")
    with capture_logs() as logs:
        monitor.step()
    snap = monitor.state.snapshot
    assert snap is not None
    assert (snap.active, snap.stuck, snap.without_ttl, snap.keys_scanned) == (4, 1, 2, 4)
    assert snap.oldest[0].key == "lock:appointment:1"
    assert {lock.kind for lock in snap.oldest} == {"string", "hash"}
    assert [e["event"] for e in logs] == ["redis_connected", "lock_stuck"]
    assert logs[1]["key"] == "lock:appointment:1"


def test_outage_then_recovery_logs_each_change_once_without_the_password() -> None:
    monitor, conn = make()
    monitor.step()
    conn.server.connected = False
    with capture_logs() as logs:
        monitor.step()  # the open connection breaks
        monitor.step()  # reconnecting is refused: a different error, logged once
        monitor.step()  # the same error again: not news
    state = monitor.state
    assert state.redis_up is False
    assert state.snapshot is not None  # the last success is kept for last_check_timestamp
    assert state.scans_error == 3
    assert [e["event"] for e in logs] == ["redis_lost", "redis_still_unavailable"]
    assert "s3cret-pw" not in str(logs)
    assert "s3cret-pw" not in (state.last_error or "")
    conn.server.connected = True
    with capture_logs() as logs:
        monitor.step()
    assert monitor.state.redis_up is True
    assert [e["event"] for e in logs] == ["redis_recovered"]


def test_unavailable_from_the_start() -> None:
    monitor, conn = make()
    conn.server.connected = False
    with capture_logs() as logs:
        delay = monitor.step()
    assert monitor.state.redis_up is False
    assert monitor.state.snapshot is None
    assert logs[0]["event"] == "redis_unavailable"
    assert 0 < delay <= 1.0


def test_stuck_locks_are_logged_when_they_become_stuck_and_when_they_clear() -> None:
    monitor, conn = make()
    conn.client.set("lock:appointment:9", epoch_ms(conn.client, 40), px=30_000)
    monitor.step()
    with capture_logs() as logs:
        monitor.step()
    assert logs == []  # still stuck: not news
    conn.client.delete("lock:appointment:9")
    with capture_logs() as logs:
        monitor.step()
    assert [e["event"] for e in logs] == ["stuck_lock_cleared"]
    assert logs[0]["key"] == "lock:appointment:9"


def test_many_stuck_locks_are_summed_up_not_flooded() -> None:
    monitor, conn = make()
    stamp = epoch_ms(conn.client, 40)
    conn.client.mset({f"lock:appointment:{i}": stamp for i in range(50)})
    with capture_logs() as logs:
        monitor.step()
    events = [e["event"] for e in logs]
    assert events.count("lock_stuck") == 20
    assert events[-1] == "stuck_locks_changed"
    assert logs[-1]["became_stuck"] == 50


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    monitor, _ = make(interval=5)
    delays = [monitor.backoff_delay(n) for n in range(1, 12)]
    assert 0.5 <= delays[0] <= 1.0
    assert 4 <= delays[3] <= 8
    assert all(15 <= d <= 30 for d in delays[6:])


@pytest.mark.parametrize(
    ("duration", "expected_delay"),
    [(0.01, 5.0), (0.25, 5.0), (0.5, 9.5), (2.0, 38.0)],
)
def test_pacing_keeps_redis_share_under_the_limit(duration: float, expected_delay: float) -> None:
    monitor, _ = make(interval=5, load=0.05)
    delay = monitor.paced_delay(duration)
    assert delay == pytest.approx(expected_delay)
    assert duration / (duration + delay) <= 0.05 + 1e-9 or delay == 5.0


def test_pacing_off_at_full_load() -> None:
    monitor, _ = make(interval=5, load=1.0)
    assert monitor.paced_delay(100.0) == 5.0


def test_pacing_shows_in_the_state() -> None:
    monitor, _conn = make(interval=0.0001, load=0.001)
    monitor.step()
    assert monitor.state.paced
    assert monitor.state.delay_seconds > 0.0001
