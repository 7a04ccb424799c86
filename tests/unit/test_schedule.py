"""The arithmetic that bounds the monitor's load on Redis: pacing after long passes, and
backoff while Redis is away."""

from __future__ import annotations

import itertools

import pytest

from lock_monitor.schedule import (
    BACKOFF_CAP_SECONDS,
    backoff_ceiling,
    backoff_delay,
    paced_delay,
)


@pytest.mark.parametrize(
    ("duration", "load"),
    list(itertools.product([0.001, 0.3, 1.0, 7.5, 120.0], [0.01, 0.05, 0.2, 0.5, 0.99])),
)
def test_share_of_a_pass_and_its_wait_never_exceeds_the_limit(duration: float, load: float) -> None:
    delay = paced_delay(duration, interval=5.0, max_redis_load=load)
    assert delay >= 5.0
    assert duration / (duration + delay) <= load * (1 + 1e-12)
    if delay > 5.0:  # stretched to the limit exactly: passes stay as frequent as allowed
        assert duration / (duration + delay) == pytest.approx(load)


def test_pacing_starts_where_the_interval_alone_would_exceed_the_limit() -> None:
    # 5 s interval at 5 %: a pass may take 5 * 0.05 / 0.95 = 0.263 s before the wait stretches.
    assert paced_delay(0.26, interval=5.0, max_redis_load=0.05) == 5.0
    assert paced_delay(0.27, interval=5.0, max_redis_load=0.05) == pytest.approx(0.27 * 19)


def test_pacing_is_off_at_full_load() -> None:
    assert paced_delay(100.0, interval=5.0, max_redis_load=1.0) == 5.0


def test_backoff_doubles_from_one_second_and_stops_at_the_cap() -> None:
    assert [backoff_ceiling(n, interval=5.0) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff_ceiling(10_000, interval=5.0) == BACKOFF_CAP_SECONDS  # no overflow


def test_backoff_starts_at_a_short_interval_and_caps_at_a_long_one() -> None:
    assert backoff_ceiling(1, interval=0.25) == 0.25
    assert backoff_ceiling(50, interval=120.0) == 120.0  # never retries slower than usual


@pytest.mark.parametrize("failures", [1, 4, 6, 10_000])
def test_backoff_jitter_spreads_over_the_upper_half_below_the_ceiling(failures: int) -> None:
    ceiling = backoff_ceiling(failures, interval=5.0)
    delays = [backoff_delay(failures, interval=5.0) for _ in range(200)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert max(delays) - min(delays) > ceiling / 4  # really random: monitors do not retry in step
