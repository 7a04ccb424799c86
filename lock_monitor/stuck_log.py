"""The stuck-lock log: which locks became stuck in a pass and which cleared since the last.

Metrics say how many locks are stuck; these lines say which, once each, when it changes.
Only the stuck locks' keys and ages are remembered between passes, and at most
STUCK_LOG_LIMIT locks are logged in full per pass: the rest are summed up in one line, so
a mass incident neither floods the log nor grows memory with whole locks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lock_monitor.locks import Lock, display

STUCK_LOG_LIMIT = 20  # stuck-lock log lines per pass; the rest are summed up in one line


@dataclass
class StuckLocks:
    """The stuck locks of one pass, kept small: the raw key and age of each, and in full only
    the first few that were not stuck in the previous pass (the ones to log)."""

    ages: dict[bytes, float] = field(default_factory=dict)  # raw key -> age
    new: list[Lock] = field(default_factory=list)  # the first STUCK_LOG_LIMIT not stuck before
    new_count: int = 0

    def add(self, key: bytes, lock: Lock, previously_stuck: Mapping[bytes, float]) -> None:
        self.ages[key] = lock.age_seconds
        if key not in previously_stuck:
            self.new_count += 1
            if len(self.new) < STUCK_LOG_LIMIT:
                self.new.append(lock)

    def cleared(self, previously_stuck: Mapping[bytes, float]) -> list[bytes]:
        """Keys stuck in the previous pass and not in this one: released, or no longer held."""
        return [key for key in previously_stuck if key not in self.ages]


def log_stuck_changes(log: Any, stuck: StuckLocks, previously_stuck: Mapping[bytes, float]) -> None:
    """One line per lock that became stuck or cleared, up to the limit, then one summary."""
    cleared = stuck.cleared(previously_stuck)
    for lock in stuck.new:
        log.warning(
            "lock_stuck",
            key=lock.key,
            age_seconds=round(lock.age_seconds, 3),
            value=lock.value,
            ttl_seconds=lock.ttl_seconds,
        )
    for key in cleared[:STUCK_LOG_LIMIT]:
        log.info(
            "stuck_lock_cleared",
            key=display(key, "key"),
            last_age_seconds=round(previously_stuck[key], 3),
        )
    if stuck.new_count > STUCK_LOG_LIMIT or len(cleared) > STUCK_LOG_LIMIT:
        log.warning(
            "stuck_locks_changed",
            became_stuck=stuck.new_count,
            cleared=len(cleared),
            stuck=len(stuck.ages),
        )
