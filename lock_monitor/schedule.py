"""When the next pass runs: pure arithmetic, so the bounds on Redis' load can be tested alone.

After a good pass the wait is the interval, stretched (up to a cap) when passes cost Redis much
of its time, so the monitor's share stays under --max-redis-load. After a failed pass the wait
backs off exponentially, with jitter, so a fleet of monitors does not hammer a Redis that is
coming back.
"""

from __future__ import annotations

import random

from lock_monitor.config import MAX_PACED_WAIT_SECONDS

BACKOFF_CAP_SECONDS = 30.0


def paced_delay(
    redis_seconds: float | None, wall_seconds: float, interval: float, max_redis_load: float
) -> float:
    """The wait after a pass that took `wall_seconds`, of which Redis itself spent
    `redis_seconds` (None when unknown: then the wall time stands in, an upper bound).

    Stretched so that Redis' share, redis_seconds / (wall_seconds + wait), stays within
    `max_redis_load`, but never beyond MAX_PACED_WAIT_SECONDS (or the interval, if longer):
    a longer wait would let LockMonitorStale fire on a healthy monitor.
    """
    work = wall_seconds if redis_seconds is None else redis_seconds
    needed = work / max_redis_load - wall_seconds if max_redis_load < 1.0 else 0.0
    return max(interval, min(needed, MAX_PACED_WAIT_SECONDS))


def backoff_ceiling(failures: int, interval: float) -> float:
    """The longest wait after `failures` failed passes in a row: doubling from the interval
    (at most a second, so the first retry comes soon) up to the cap, or the interval if longer."""
    base = min(interval, 1.0)
    cap = max(interval, BACKOFF_CAP_SECONDS)
    return min(cap, base * 2.0 ** min(failures - 1, 16))  # the exponent is bounded: no overflow


def backoff_delay(failures: int, interval: float) -> float:
    """A wait drawn from the upper half below the ceiling, so many monitors do not retry in step."""
    ceiling = backoff_ceiling(failures, interval)
    return random.uniform(ceiling / 2, ceiling)
