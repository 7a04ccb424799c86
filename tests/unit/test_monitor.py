"""The pass loop's bookkeeping: counts, transitions, logs, pacing and backoff in the state.

Redis is replaced at the narrowest seam, `read_pages`: it hands over hand-built locks, or
raises what redis-py raises from a pass. The client itself is the real lazy one (`connect`
never touches the network for a standalone URL), so a failure arrives where it does in
production: on the first read of a pass. Where a test needs a pass of a given duration, the
pass reader itself is replaced. What Redis itself does is tested in tests/integration
(test_passes.py, test_monitor_outage.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import redis
import structlog
from structlog.testing import capture_logs

from lock_monitor.config import MAX_PACED_WAIT_SECONDS, RedisSettings, ScanSettings
from lock_monitor.connection import Target
from lock_monitor.events import Events
from lock_monitor.liveset import LiveSet
from lock_monitor.monitor import Monitor
from lock_monitor.passes import PassFailed, PassResult
from lock_monitor.scanner import Page
from lock_monitor.snapshot import Snapshot
from lock_monitor.stuck_log import StuckLocks
from lock_monitor.wire import ServerReading
from tests.unit.pages import NOW, RawLock, pages_of

SETTINGS = RedisSettings(url="redis://example:6379/0", password="s3cret-pw")


def held(key: str, seconds_ago: float, pttl_ms: int = 30_000) -> RawLock:
    """A lock as the backend takes it: epoch-ms value and a TTL."""
    return RawLock(key.encode(), b"%d" % ((NOW - seconds_ago) * 1000), pttl_ms)


class FakeScanner:
    """Stands in for `read_pages`: every pass yields `locks`, or fails with `error`."""

    def __init__(self) -> None:
        self.locks: list[RawLock] = []
        self.error: Exception | None = None

    def __call__(
        self,
        client: redis.Redis,
        pattern: str,
        count: int,
        cluster: bool,
        budget: object,
        recall: object,
    ) -> Iterator[Page]:
        if self.error is not None:
            raise self.error  # a generator: raised on the first read, as redis-py does
        yield from pages_of(self.locks)


@pytest.fixture
def redis_node(monkeypatch: pytest.MonkeyPatch) -> FakeScanner:
    scanner = FakeScanner()
    monkeypatch.setattr("lock_monitor.passes.read_pages", scanner)
    monkeypatch.setattr(
        "lock_monitor.passes.server_reading", lambda client, budget: ServerReading("id", 0.0)
    )
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
        RawLock(b"lock:appointment:3", b"token", -1),  # no TTL
        RawLock(b"lock:appointment:4", None, -1, "hash"),  # a Redisson lock
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


def test_a_refused_connection_is_a_failed_pass_retried_with_a_new_connection() -> None:
    attempts: list[RedisSettings] = []

    def refuse(settings: RedisSettings) -> Target:
        attempts.append(settings)
        raise redis.ConnectionError("Error 111 connecting to example:6379 as s3cret-pw.")

    monitor = Monitor(SETTINGS, ScanSettings(interval=5), connector=refuse)
    with capture_logs() as logs:
        monitor.step()
        monitor.step()
    assert len(attempts) == 2
    assert (monitor.state.redis_up, monitor.state.scans_error) == (False, 2)
    assert (
        monitor.state.last_error == "ConnectionError: Error 111 connecting to example:6379 as ***."
    )
    assert events(logs) == ["redis_unavailable"]


def test_a_failed_pass_publishes_which_nodes_were_read(monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = (("10.0.0.1:6379", True), ("10.0.0.2:6379", False))

    def one_node_down(*args: Any, **kwargs: Any) -> PassResult:
        raise PassFailed({"10.0.0.2:6379": "ConnectionError: refused"}, nodes)

    monkeypatch.setattr("lock_monitor.monitor.read_pass", one_node_down)
    monitor = make()
    monitor.step()
    assert monitor.state.nodes == nodes
    assert monitor.state.last_error == "10.0.0.2:6379: ConnectionError: refused"


class TimedPasses:
    """Stands in for `read_pass`: each pass takes `duration`, or fails while `down`."""

    def __init__(self) -> None:
        self.duration = 0.1
        self.redis_seconds: float | None = None  # unknown: paced on the wall time
        self.down = False

    def __call__(self, *args: Any, **kwargs: Any) -> PassResult:
        if self.down:
            raise PassFailed({"redis://example:6379/0": "ConnectionError: gone"})
        snapshot = Snapshot(NOW, self.duration, 0, 0, 0, 0, ())
        return PassResult(snapshot, StuckLocks(), (), self.redis_seconds)


@pytest.fixture
def timed(monkeypatch: pytest.MonkeyPatch) -> TimedPasses:
    passes = TimedPasses()
    monkeypatch.setattr("lock_monitor.monitor.read_pass", passes)
    return passes


def test_pacing_ends_when_passes_get_short_again(timed: TimedPasses) -> None:
    monitor = make()
    timed.duration = 2.0
    assert monitor.step() == pytest.approx(38.0)  # 2 s at 5 %: 38 s of rest
    assert monitor.state.paced
    timed.duration = 0.1
    assert monitor.step() == 5.0
    assert not monitor.state.paced


def test_a_failure_backs_off_instead_of_pacing_and_recovery_paces_again(
    timed: TimedPasses,
) -> None:
    monitor = make()
    timed.duration = 2.0
    monitor.step()
    timed.down = True
    assert 0.5 <= monitor.step() <= 1.0  # the first retry comes soon
    assert not monitor.state.paced
    assert 1.0 <= monitor.step() <= 2.0  # then later
    timed.down = False
    assert monitor.step() == pytest.approx(38.0)
    assert monitor.state.paced
    timed.down = True
    assert 0.5 <= monitor.step() <= 1.0  # a success resets the backoff


def test_waiting_on_redis_is_not_counted_as_its_work(timed: TimedPasses) -> None:
    """A stall, a pause or a slow link makes a long pass in which Redis did little."""
    monitor = make()
    timed.duration, timed.redis_seconds = 8.0, 0.01
    assert monitor.step() == 5.0
    assert not monitor.state.paced
    timed.duration, timed.redis_seconds = 8.0, 1.0  # Redis really worked a second: 20 s cycle
    assert monitor.step() == pytest.approx(12.0)
    assert monitor.state.paced


def test_the_stretched_wait_is_capped_below_the_stale_alert(timed: TimedPasses) -> None:
    monitor = make()
    timed.duration, timed.redis_seconds = 65.0, 20.0
    assert monitor.step() == MAX_PACED_WAIT_SECONDS
    assert monitor.state.paced
    timed.redis_seconds = None
    assert monitor.step() == MAX_PACED_WAIT_SECONDS


class StopAtFirstWait(threading.Event):
    """The loop's stop event: records the first wait it is asked for, and stops the loop."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        self.set()
        return True


@pytest.mark.parametrize(
    ("duration", "redis_seconds", "early_wait"),
    [
        (8.0, 0.01, 0.0),  # Redis did little: the early pass may come now (not at the interval)
        (8.0, 1.0, 12.0),  # Redis worked a second: 5 % of a 20 s cycle, as for any pass
        (65.0, 20.0, MAX_PACED_WAIT_SECONDS),  # never beyond the cap
    ],
)
def test_the_early_pass_after_a_subscription_is_paced_on_redis_time(
    timed: TimedPasses, duration: float, redis_seconds: float, early_wait: float
) -> None:
    live = LiveSet(stuck_threshold=30)
    subscriptions = Events(SETTINGS, "lock:*", "auto", live, structlog.get_logger())
    monitor = Monitor(SETTINGS, ScanSettings(interval=3600), events=subscriptions)
    stop = monitor._stop = StopAtFirstWait()
    timed.duration, timed.redis_seconds = duration, redis_seconds
    subscriptions.pass_wanted()  # every node subscribed: a pass is wanted early
    monitor._loop()
    assert monitor.state.delay_seconds == 3600  # the regular wait
    assert stop.waits[0] == pytest.approx(early_wait, abs=0.5)  # less the time already spent


def test_pacing_on_the_wall_time_is_logged_once(timed: TimedPasses) -> None:
    monitor = make()
    with capture_logs() as logs:
        monitor.step()
        monitor.step()
    assert events(logs) == ["redis_connected", "pacing_on_wall_time"]


def test_a_real_pass_is_paced_from_its_own_duration(
    redis_node: FakeScanner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where INFO is refused, the wall time stands in for Redis' time."""
    monkeypatch.setattr(
        "lock_monitor.passes.server_reading", lambda client, budget: ServerReading(None, None)
    )
    monitor = Monitor(SETTINGS, ScanSettings(interval=1e-6, max_redis_load=0.05))
    monitor.step()
    duration = monitor.state.snapshot.duration_seconds  # type: ignore[union-attr]
    assert monitor.state.paced
    assert monitor.state.delay_seconds == pytest.approx(duration * 19)


def test_a_pass_feeds_the_live_set_only_while_every_node_is_subscribed(
    redis_node: FakeScanner,
) -> None:
    """Not subscribed (the server does not publish, say), the set is of no use: a pass must
    not gather every lock for it."""
    redis_node.locks = [held("lock:appointment:1", 1)]
    live = LiveSet(stuck_threshold=30)
    subscriptions = Events(SETTINGS, "lock:*", "auto", live, structlog.get_logger())
    monitor = Monitor(SETTINGS, ScanSettings(stuck_threshold=30), events=subscriptions)
    monitor.step()
    assert live.held == {}
    live.subscriptions_changed(True)
    monitor.step()
    assert set(live.held) == {b"lock:appointment:1"}
