"""When the next pass runs: pure arithmetic, so the bounds on Redis' load can be tested alone.

After a good pass the wait is the interval, stretched when passes are long so the monitor's
share of Redis' time stays under --max-redis-load. After a failed pass the wait backs off
exponentially, with jitter, so a fleet of monitors does not hammer a Redis that is coming back.
"""

from __future__ import annotations

import random

BACKOFF_CAP_SECONDS = 30.0


def paced_delay(duration: float, interval: float, max_redis_load: float) -> float:
    """The wait after a pass that took `duration` seconds.

    The pass's wall time stands in for the time Redis spent on it (an upper bound), so the
    monitor's share of Redis is at most duration / (duration + wait).
    """
    needed = duration * (1.0 - max_redis_load) / max_redis_load if max_redis_load < 1.0 else 0.0
    return max(interval, needed)


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
