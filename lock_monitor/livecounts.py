"""What a scrape or a page reads of the live set: counts, counters and hold-time histograms."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

OUTCOMES = ("released", "expired", "evicted")
# Hold times of locks taken for 30 s: fine below a second, around the TTL, and past it.
HOLD_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0,
)  # fmt: skip


@dataclass(frozen=True)
class LiveCounts:
    active: int
    stuck: int
    without_ttl: int
    oldest_age_seconds: float


@dataclass(frozen=True)
class RecentEnd:
    key: str  # display form: bounded, never raw bytes
    outcome: str
    hold_seconds: float | None  # None when the acquisition time was not known
    ended_at: float  # Redis time


@dataclass(frozen=True)
class HoldHistogram:
    buckets: tuple[int, ...]  # cumulative counts per HOLD_BUCKETS bound, then +Inf
    total: float


@dataclass(frozen=True)
class EventCounters:
    """The counters since the process started, read in one go for one scrape."""

    acquisitions: int
    renewals: int
    releases: dict[str, int]
    received: int
    corrections: int
    hold: dict[str, HoldHistogram]
    recent: tuple[RecentEnd, ...]


@dataclass(frozen=True)
class Current:
    """The live set as one scrape or page reads it, when it is current."""

    counts: LiveCounts
    ended: frozenset[str]  # of the keys asked about (as shown), those the set no longer holds


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(HOLD_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(HOLD_BUCKETS, seconds)] += 1
        self.total += seconds

    def freeze(self) -> HoldHistogram:
        cumulative, running = [], 0
        for count in self.counts:
            running += count
            cumulative.append(running)
        return HoldHistogram(tuple(cumulative), self.total)
