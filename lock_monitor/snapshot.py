"""The result of one completed pass: counts plus the oldest locks, immutable once built.

Scrapes and pages read a snapshot, never Redis, so a scrape costs the same however big the
keyspace is. A snapshot keeps only the oldest few locks, which bounds its memory whatever
the number of live locks.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from lock_monitor.locks import Lock
from lock_monitor.tracker import PageVerdict

OLDEST_SHOWN = 20


@dataclass(frozen=True)
class Snapshot:
    completed_at: float  # Unix time of the end of the pass, by this host's clock
    duration_seconds: float
    keys_scanned: int
    active: int
    stuck: int
    without_ttl: int
    oldest: tuple[Lock, ...]  # by age, oldest first
    first_seen: int = 0  # locks aged from their first sighting (no timestamp in the value)

    @property
    def oldest_age_seconds(self) -> float:
        return self.oldest[0].age_seconds if self.oldest else 0.0


@dataclass
class SnapshotBuilder:
    """Accumulates a pass page by page; `keep_oldest=None` keeps every lock."""

    keep_oldest: int | None = OLDEST_SHOWN
    keys_scanned: int = 0
    active: int = 0
    stuck: int = 0
    without_ttl: int = 0
    first_seen: int = 0
    _heap: list[tuple[float, int, Lock]] = field(default_factory=list)
    _added: int = 0

    def older_than(self) -> float:
        """The age a lock must exceed to be kept: the pages build only those in full."""
        if self.keep_oldest is None or len(self._heap) < self.keep_oldest:
            return -math.inf
        return self._heap[0][0] if self._heap else math.inf

    def add(self, verdict: PageVerdict) -> None:
        self.active += verdict.active
        self.stuck += verdict.stuck
        self.without_ttl += verdict.without_ttl
        self.first_seen += verdict.first_seen
        self.keep(verdict.older)

    def keep(self, locks: Iterable[Lock]) -> None:
        for lock in locks:
            self._added += 1
            entry = (lock.age_seconds, self._added, lock)  # the counter breaks ties
            if self.keep_oldest is None or len(self._heap) < self.keep_oldest:
                heapq.heappush(self._heap, entry)
            elif self._heap and entry[0] > self._heap[0][0]:
                heapq.heapreplace(self._heap, entry)

    def build(self, completed_at: float, duration_seconds: float) -> Snapshot:
        oldest = tuple(lock for _, _, lock in sorted(self._heap, key=lambda e: (-e[0], e[1])))
        return Snapshot(
            completed_at=completed_at,
            duration_seconds=duration_seconds,
            keys_scanned=self.keys_scanned,
            active=self.active,
            stuck=self.stuck,
            without_ttl=self.without_ttl,
            oldest=oldest,
            first_seen=self.first_seen,
        )
