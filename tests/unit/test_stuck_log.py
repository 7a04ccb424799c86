"""Which stuck locks are logged: once when they become stuck, once when they clear, and a
summary instead of a flood when many change at once."""

from __future__ import annotations

from typing import Any

import structlog
from structlog.testing import capture_logs

from lock_monitor.locks import Lock
from lock_monitor.stuck_log import STUCK_LOG_LIMIT, StuckLocks, log_stuck_changes

LOG: Any = structlog.get_logger("test")


def stuck_lock(i: int, age: float = 40.0) -> tuple[bytes, Lock]:
    key = f"lock:appointment:{i}"
    return key.encode(), Lock(key, "1799999960000", "string", 20.0, age, "value", True)


def pass_of(indices: range, previously_stuck: dict[bytes, float]) -> StuckLocks:
    stuck = StuckLocks()
    for i in indices:
        stuck.add(*stuck_lock(i), previously_stuck=previously_stuck)
    return stuck


def test_only_locks_not_stuck_before_are_new() -> None:
    first = pass_of(range(3), previously_stuck={})
    assert [lock.key for lock in first.new] == [f"lock:appointment:{i}" for i in range(3)]
    second = pass_of(range(1, 5), previously_stuck=first.ages)
    assert [lock.key for lock in second.new] == ["lock:appointment:3", "lock:appointment:4"]
    assert second.new_count == 2
    assert second.cleared(first.ages) == [b"lock:appointment:0"]


def test_memory_keeps_every_age_but_only_the_first_new_locks_in_full() -> None:
    stuck = pass_of(range(STUCK_LOG_LIMIT * 3), previously_stuck={})
    assert len(stuck.ages) == stuck.new_count == STUCK_LOG_LIMIT * 3
    assert len(stuck.new) == STUCK_LOG_LIMIT


def test_a_new_lock_and_a_cleared_one_are_logged_once_each() -> None:
    before = pass_of(range(2), previously_stuck={})
    now = pass_of(range(1, 3), previously_stuck=before.ages)
    with capture_logs() as logs:
        log_stuck_changes(LOG, now, before.ages)
    assert [(entry["event"], entry["key"]) for entry in logs] == [
        ("lock_stuck", "lock:appointment:2"),
        ("stuck_lock_cleared", "lock:appointment:0"),
    ]
    assert logs[0]["age_seconds"] == 40
    assert logs[0]["ttl_seconds"] == 20
    assert logs[1]["last_age_seconds"] == 40
    with capture_logs() as logs:
        log_stuck_changes(LOG, pass_of(range(1, 3), now.ages), now.ages)
    assert logs == []  # still stuck: not news


def test_many_stuck_locks_are_summed_up_not_flooded() -> None:
    many = pass_of(range(50), previously_stuck={})
    with capture_logs() as logs:
        log_stuck_changes(LOG, many, {})
    events = [entry["event"] for entry in logs]
    assert events == ["lock_stuck"] * STUCK_LOG_LIMIT + ["stuck_locks_changed"]
    assert (logs[-1]["became_stuck"], logs[-1]["cleared"], logs[-1]["stuck"]) == (50, 0, 50)

    with capture_logs() as logs:  # all released at once
        log_stuck_changes(LOG, StuckLocks(), many.ages)
    events = [entry["event"] for entry in logs]
    assert events == ["stuck_lock_cleared"] * STUCK_LOG_LIMIT + ["stuck_locks_changed"]
    assert (logs[-1]["became_stuck"], logs[-1]["cleared"], logs[-1]["stuck"]) == (0, 50, 0)
