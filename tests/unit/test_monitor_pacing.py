"""The arithmetic that bounds the monitor's load on Redis: pacing after long passes, and
backoff while Redis is away; and where an operator sees that pacing is on."""

from __future__ import annotations

import itertools

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lock_monitor.config import RedisSettings, ScanSettings
from lock_monitor.metrics import build_registry
from lock_monitor.monitor import BACKOFF_CAP_SECONDS, Monitor, MonitorState, StuckLocks
from lock_monitor.snapshot import Snapshot
from lock_monitor.web import status_document, status_page

SETTINGS = RedisSettings(url="redis://example:6379/0")


def monitor(interval: float = 5.0, load: float = 0.05) -> Monitor:
    """A monitor on a lazy client that no test here lets touch the network."""
    return Monitor(SETTINGS, ScanSettings(interval=interval, max_redis_load=load))


def snapshot(duration: float) -> Snapshot:
    return Snapshot(1e9, duration, 0, 0, 0, 0, ())


@pytest.mark.parametrize(
    ("duration", "load"),
    list(itertools.product([0.001, 0.3, 1.0, 7.5, 120.0], [0.01, 0.05, 0.2, 0.5, 0.99])),
)
def test_share_of_a_pass_and_its_wait_never_exceeds_the_limit(duration: float, load: float) -> None:
    delay = monitor(interval=5.0, load=load).paced_delay(duration)
    assert delay >= 5.0
    assert duration / (duration + delay) <= load * (1 + 1e-12)
    if delay > 5.0:  # stretched to the limit exactly: passes stay as frequent as allowed
        assert duration / (duration + delay) == pytest.approx(load)


def test_pacing_starts_where_the_interval_alone_would_exceed_the_limit() -> None:
    # 5 s interval at 5 %: a pass may take 5 * 0.05 / 0.95 = 0.263 s before the wait stretches.
    paced = monitor(interval=5.0, load=0.05)
    assert paced.paced_delay(0.26) == 5.0
    assert paced.paced_delay(0.27) == pytest.approx(0.27 * 19)


def test_pacing_is_off_at_full_load() -> None:
    assert monitor(interval=5.0, load=1.0).paced_delay(100.0) == 5.0


def test_pacing_ends_when_passes_get_short_again() -> None:
    paced = monitor(interval=5.0)
    paced._on_success(snapshot(2.0), StuckLocks())
    assert paced.state.paced
    assert paced.state.delay_seconds == pytest.approx(38.0)
    paced._on_success(snapshot(0.1), StuckLocks())
    assert not paced.state.paced
    assert paced.state.delay_seconds == 5.0


def test_a_failure_backs_off_instead_of_pacing_and_recovery_paces_again() -> None:
    paced = monitor(interval=5.0)
    paced._on_success(snapshot(2.0), StuckLocks())
    paced._on_failure("ConnectionError: gone")
    assert not paced.state.paced
    assert 0.5 <= paced.state.delay_seconds <= 1.0  # the first retry comes soon
    paced._on_success(snapshot(2.0), StuckLocks())
    assert paced.state.paced
    assert paced.state.delay_seconds == pytest.approx(38.0)


def test_a_real_pass_is_paced_from_its_own_duration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lock_monitor.monitor.read_locks", lambda *args, **kwargs: iter(()))
    paced = monitor(interval=1e-6, load=0.05)
    paced.step()
    duration = paced.state.snapshot.duration_seconds  # type: ignore[union-attr]
    assert paced.state.paced
    assert paced.state.delay_seconds == pytest.approx(duration * 19)


def test_backoff_doubles_from_one_second_and_stops_at_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("random.uniform", lambda low, high: high)  # the ceiling itself
    slow = monitor(interval=5.0)
    assert [slow.backoff_delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert slow.backoff_delay(10_000) == BACKOFF_CAP_SECONDS  # no overflow however long


def test_backoff_starts_at_a_short_interval_and_caps_at_a_long_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("random.uniform", lambda low, high: high)
    assert monitor(interval=0.25).backoff_delay(1) == 0.25
    assert monitor(interval=120.0).backoff_delay(50) == 120.0  # never retries slower than usual


def test_backoff_jitter_spreads_over_the_upper_half() -> None:
    delays = [monitor(interval=5.0).backoff_delay(4) for _ in range(200)]
    assert all(4.0 <= d <= 8.0 for d in delays)
    assert max(delays) - min(delays) > 1.0  # really random, so monitors do not retry in step


def test_metrics_and_status_page_say_when_pacing_stretches_the_wait() -> None:
    state = MonitorState(redis_up=True, snapshot=snapshot(2.0), delay_seconds=38.0, paced=True)
    text = generate_latest(build_registry(lambda: state, "standalone")).decode()
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert values["lock_monitor_pacing_active"] == 1
    assert values["lock_monitor_next_pass_delay_seconds"] == 38.0
    page = status_page(status_document(state, "redis://example:6379/0", "standalone", 1e9))
    assert "Pacing" in page
    assert "38.0s" in page
    calm = MonitorState(redis_up=True, snapshot=snapshot(0.1), delay_seconds=5.0)
    assert "Pacing" not in status_page(status_document(calm, "r", "standalone", 1e9))
