"""The stuck-lock log: which locks became stuck in a pass and which cleared since the last.

Metrics say how many locks are stuck; these lines say which, once each, when it changes.
At most STUCK_LOG_LIMIT locks are logged in full per pass: the rest are summed up in one
line, so a mass incident neither floods the log nor grows memory with whole locks. A lock
is named when it clears only if it was named when it became stuck (up to NAMED_LIMIT of
them are remembered); the others are counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lock_monitor.locks import Lock
from lock_monitor.tracker import PageVerdict, Vanished

STUCK_LOG_LIMIT = 20  # stuck-lock log lines per pass; the rest are summed up in one line
NAMED_LIMIT = 1000  # stuck locks remembered by name until they clear


@dataclass(frozen=True)
class StuckMemory:
    """What the log remembers between passes: how many locks were stuck, and for those it
    named, by fingerprint: the key as shown, the node, and when the lock started."""

    count: int = 0
    named: dict[int, tuple[str, str, float]] = field(default_factory=dict)


@dataclass
class StuckLocks:
    """The stuck locks of one pass: counts, and in full only the first few that were not
    stuck in the previous pass (the ones to log)."""

    previous: StuckMemory = field(default_factory=StuckMemory)
    count: int = 0
    still: int = 0  # also stuck in the previous pass
    # fingerprint, node, start, lock
    new: list[tuple[int, str, float, Lock]] = field(default_factory=list)
    new_count: int = 0
    cleared: list[tuple[str, float]] = field(default_factory=list)  # named: key, last age
    remembered: StuckMemory = field(default_factory=StuckMemory)  # for the next pass

    def add(self, verdict: PageVerdict, node: str) -> None:
        self.count += verdict.stuck
        self.still += verdict.still_stuck
        self.new_count += verdict.newly_stuck_count
        self.new.extend((print_, node, start, lock) for print_, start, lock in verdict.newly_stuck)

    @property
    def cleared_count(self) -> int:
        """Stuck in the previous pass and not any more: released (a stuck lock stays stuck)."""
        return max(0, self.previous.count - self.still)

    def finish(self, vanished: Vanished) -> None:
        """Name the cleared locks that were named, and say what to remember for the next pass."""
        named = dict(self.previous.named)
        for print_, (key, node, start) in self.previous.named.items():
            if print_ in vanished:
                self.cleared.append((key, max(0.0, vanished.now.get(node, start) - start)))
                del named[print_]
        for print_, node, start, lock in self.new:
            if len(named) < NAMED_LIMIT:
                named[print_] = (lock.key, node, start)
        self.remembered = StuckMemory(self.count, named)


def log_stuck_changes(log: Any, stuck: StuckLocks) -> None:
    """One line per lock that became stuck or cleared, up to the limit, then one summary
    when some were not named."""
    for *_, lock in stuck.new:
        log.warning(
            "lock_stuck",
            key=lock.key,
            age_seconds=round(lock.age_seconds, 3),
            value=lock.value,
            ttl_seconds=lock.ttl_seconds,
        )
    for key, age in stuck.cleared[:STUCK_LOG_LIMIT]:
        log.info("stuck_lock_cleared", key=key, last_age_seconds=round(age, 3))
    if stuck.new_count > len(stuck.new) or stuck.cleared_count > min(
        len(stuck.cleared), STUCK_LOG_LIMIT
    ):
        log.warning(
            "stuck_locks_changed",
            became_stuck=stuck.new_count,
            cleared=stuck.cleared_count,
            stuck=stuck.count,
        )
