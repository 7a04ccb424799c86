"""The arithmetic that bounds the monitor's load on Redis: pacing after costly passes (on
Redis' own time, capped), and backoff while Redis is away."""

from __future__ import annotations

import itertools

import pytest

from lock_monitor.config import (
    MAX_PACED_WAIT_SECONDS,
    SCRAPE_ALLOWANCE_SECONDS,
    STALE_ALERT_SECONDS,
    default_pass_timeout,
)
from lock_monitor.schedule import (
    BACKOFF_CAP_SECONDS,
    backoff_ceiling,
    backoff_delay,
    paced_delay,
)


@pytest.mark.parametrize(
    ("redis", "wall", "load"),
    list(itertools.product([0.001, 0.3, 1.0, 2.5], [1.0, 1.5, 3.0], [0.01, 0.05, 0.2, 0.5, 0.99])),
)
def test_redis_share_of_a_cycle_stays_within_the_limit_below_the_cap(
    redis: float, wall: float, load: float
) -> None:
    delay = paced_delay(redis, wall, interval=5.0, max_redis_load=load)
    assert 5.0 <= delay <= MAX_PACED_WAIT_SECONDS
    if delay < MAX_PACED_WAIT_SECONDS:
        assert redis / (wall + delay) <= load * (1 + 1e-12)
    if 5.0 < delay < MAX_PACED_WAIT_SECONDS:  # stretched to the limit exactly
        assert redis / (wall + delay) == pytest.approx(load)


@pytest.mark.parametrize("wall", [8.0, 49.0, 84.0])
def test_time_spent_waiting_on_redis_is_not_paced(wall: float) -> None:
    """A stall, a pause or a slow link: a long pass in which Redis itself worked little."""
    assert paced_delay(0.1, wall, interval=5.0, max_redis_load=0.05) == 5.0


def test_without_redis_time_the_wall_time_stands_in() -> None:
    # 5 s interval at 5 %: a pass may take 5 * 0.05 / 0.95 = 0.263 s before the wait stretches.
    assert paced_delay(None, 0.26, interval=5.0, max_redis_load=0.05) == 5.0
    assert paced_delay(None, 0.27, interval=5.0, max_redis_load=0.05) == pytest.approx(0.27 * 19)


def test_the_stretched_wait_is_capped_so_stale_never_fires_on_a_healthy_monitor() -> None:
    for redis, wall in [(9.5, 9.5), (65.0, 65.0), (20.0, 30.0)]:
        assert paced_delay(redis, wall, 5.0, 0.05) == MAX_PACED_WAIT_SECONDS
    assert paced_delay(9.5, 9.5, 300.0, 0.05) == 300.0  # a longer interval is the operator's
    longest_gap = MAX_PACED_WAIT_SECONDS + default_pass_timeout(5.0)
    assert longest_gap + SCRAPE_ALLOWANCE_SECONDS <= STALE_ALERT_SECONDS


def test_pacing_is_off_at_full_load() -> None:
    assert paced_delay(100.0, 100.0, interval=5.0, max_redis_load=1.0) == 5.0


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
