"""Which stuck locks are logged: once when they become stuck, once when they clear, and a
summary instead of a flood when many change at once."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import structlog
from structlog.testing import capture_logs

from lock_monitor.stuck_log import (
    NAMED_LIMIT,
    STUCK_LOG_LIMIT,
    StuckLocks,
    StuckMemory,
    log_stuck_changes,
)
from lock_monitor.tracker import LockTracker
from tests.unit.pages import NOW, RawLock, pages_of

LOG: Any = structlog.get_logger("test")


def stuck_lock(i: int, age: float = 40.0) -> RawLock:
    return RawLock(f"lock:appointment:{i}".encode(), b"%d" % ((NOW - age) * 1000), 20_000)


class Passes:
    """Successive passes over the stuck locks given, remembered as the daemon's loop does."""

    def __init__(self) -> None:
        self.tracker = LockTracker(stuck_threshold=30)
        self.memory = StuckMemory()

    def run(self, indices: Iterable[int]) -> StuckLocks:
        stuck = StuckLocks(self.memory)
        for page in pages_of(stuck_lock(i) for i in indices):
            wanted = STUCK_LOG_LIMIT - len(stuck.new)
            stuck.add(self.tracker.add_page(page, "node", math.inf, wanted), "node")
        stuck.finish(self.tracker.finish_pass())
        self.memory = stuck.remembered
        return stuck


def new_keys(stuck: StuckLocks) -> list[str]:
    return [lock.key for *_, lock in stuck.new]


def test_only_locks_not_stuck_before_are_new() -> None:
    passes = Passes()
    first = passes.run(range(3))
    assert new_keys(first) == [f"lock:appointment:{i}" for i in range(3)]
    second = passes.run(range(1, 5))
    assert new_keys(second) == ["lock:appointment:3", "lock:appointment:4"]
    assert (second.count, second.new_count, second.cleared_count) == (4, 2, 1)
    assert second.cleared == [("lock:appointment:0", 40)]


def test_memory_keeps_counts_but_only_the_first_new_locks_in_full() -> None:
    stuck = Passes().run(range(STUCK_LOG_LIMIT * 3))
    assert stuck.count == stuck.new_count == STUCK_LOG_LIMIT * 3
    assert len(stuck.new) == STUCK_LOG_LIMIT
    assert len(stuck.remembered.named) == STUCK_LOG_LIMIT


def test_a_new_lock_and_a_cleared_one_are_logged_once_each() -> None:
    passes = Passes()
    passes.run(range(2))
    now = passes.run(range(1, 3))
    with capture_logs() as logs:
        log_stuck_changes(LOG, now)
    assert [(entry["event"], entry["key"]) for entry in logs] == [
        ("lock_stuck", "lock:appointment:2"),
        ("stuck_lock_cleared", "lock:appointment:0"),
    ]
    assert logs[0]["age_seconds"] == 40
    assert logs[0]["ttl_seconds"] == 20
    assert logs[1]["last_age_seconds"] == 40
    with capture_logs() as logs:
        log_stuck_changes(LOG, passes.run(range(1, 3)))
    assert logs == []  # still stuck: not news


def test_many_stuck_locks_are_summed_up_not_flooded() -> None:
    passes = Passes()
    with capture_logs() as logs:
        log_stuck_changes(LOG, passes.run(range(50)))
    events = [entry["event"] for entry in logs]
    assert events == ["lock_stuck"] * STUCK_LOG_LIMIT + ["stuck_locks_changed"]
    assert (logs[-1]["became_stuck"], logs[-1]["cleared"], logs[-1]["stuck"]) == (50, 0, 50)

    with capture_logs() as logs:  # all released at once
        log_stuck_changes(LOG, passes.run([]))
    events = [entry["event"] for entry in logs]
    assert events == ["stuck_lock_cleared"] * STUCK_LOG_LIMIT + ["stuck_locks_changed"]
    assert (logs[-1]["became_stuck"], logs[-1]["cleared"], logs[-1]["stuck"]) == (0, 50, 0)


def test_a_lock_not_named_when_stuck_is_counted_when_it_clears() -> None:
    passes = Passes()
    passes.run(range(STUCK_LOG_LIMIT + 5))  # the last five were summed up, not named
    with capture_logs() as logs:
        log_stuck_changes(LOG, passes.run(i for i in range(STUCK_LOG_LIMIT + 5) if i != 22))
    assert [entry["event"] for entry in logs] == ["stuck_locks_changed"]
    assert (logs[0]["became_stuck"], logs[0]["cleared"], logs[0]["stuck"]) == (0, 1, 24)


def test_the_names_remembered_are_bounded() -> None:
    passes = Passes()
    for end in range(STUCK_LOG_LIMIT, NAMED_LIMIT + 3 * STUCK_LOG_LIMIT, STUCK_LOG_LIMIT):
        stuck = passes.run(range(end))  # twenty more become stuck in every pass
    assert stuck.count == NAMED_LIMIT + 2 * STUCK_LOG_LIMIT
    assert len(stuck.remembered.named) == NAMED_LIMIT
