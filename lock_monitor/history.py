"""The recent past of the pass results, for the status page's charts: a fixed-size ring buffer.

Its memory is fixed when it is made (`capacity` samples of each series, 8 bytes each, in flat
arrays), whatever the number of locks or how long the daemon runs. Passes are grouped into
steps of `step` seconds: several passes in one step become one sample, so the window it covers
is `capacity * step` whatever the `--interval`. A step without a successful pass has no sample,
which the charts draw as a gap.
"""

from __future__ import annotations

import math
import operator
import sys
import threading
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

STEP_SECONDS = 10.0
CAPACITY = 360  # one hour of 10 s steps
PEAK = max
TOTAL = operator.add


@dataclass(frozen=True)
class Series:
    """One recorded quantity. Series with the same `chart` are drawn together.

    `merge` combines the passes that fall in one step: the peak for a gauge (a stuck lock seen
    for one pass must not vanish from the chart), the sum for a count of events.
    """

    name: str
    chart: str
    unit: str = ""  # "s" for seconds
    merge: Callable[[float, float], float] = PEAK


# What every pass gives. A lifecycle-event source adds its own series (merge=TOTAL), e.g.
# acquisitions and ends by outcome sharing one chart, and records them with the rest.
PASS_SERIES = (
    Series("active", "Active locks"),
    Series("stuck", "Stuck locks"),
    Series("without_ttl", "Locks without TTL"),
    Series("oldest_age_seconds", "Oldest lock age", unit="s"),
)


@dataclass(frozen=True)
class Window:
    """The samples of the last `capacity * step` seconds, oldest first; None: not recorded."""

    step: float
    start: float
    end: float
    times: list[float]
    values: dict[str, list[float | None]]


class History:
    def __init__(
        self,
        series: Sequence[Series] = PASS_SERIES,
        capacity: int = CAPACITY,
        step: float = STEP_SECONDS,
    ) -> None:
        if capacity < 1 or step <= 0:
            raise ValueError("a history needs at least one sample of a positive step")
        self.series = tuple(series)
        self.capacity, self.step = capacity, step
        self._times = array("d", [math.nan]) * capacity  # the start of each sample's step
        self._values = {s.name: array("d", [math.nan]) * capacity for s in self.series}
        self._last = -1  # index of the newest sample; -1: none yet
        self._mutex = threading.Lock()  # one writer (the pass loop), many readers (pages)

    def record(self, at: float, values: Mapping[str, float]) -> None:
        """Add one pass's values at Unix time `at`; a series left out stays unknown."""
        slot = at - at % self.step
        with self._mutex:
            newest = self._times[self._last] if self._last >= 0 else math.nan
            if slot == newest:
                index = self._last
            elif slot > newest or math.isnan(newest):
                index = self._last = (self._last + 1) % self.capacity
                self._times[index] = slot
                for column in self._values.values():
                    column[index] = math.nan
            else:
                return  # the clock went back: keep the samples in order
            for series in self.series:
                value = values.get(series.name)
                if value is not None:
                    old = self._values[series.name][index]
                    new = value if math.isnan(old) else series.merge(old, value)
                    self._values[series.name][index] = new

    def window(self, now: float) -> Window:
        """The samples of the last `capacity` steps before `now`, oldest first."""
        start = now - self.capacity * self.step
        with self._mutex:
            order = [(self._last + 1 + i) % self.capacity for i in range(self.capacity)]
            kept = [i for i in order if not math.isnan(self._times[i]) and self._times[i] > start]
            times = [self._times[i] for i in kept]
            values = {
                name: [None if math.isnan(column[i]) else column[i] for i in kept]
                for name, column in self._values.items()
            }
        return Window(self.step, start, now, times, values)

    def nbytes(self) -> int:
        """The buffer's memory, arrays and their headers; fixed from construction on."""
        columns = [self._times, *self._values.values()]
        return sum(sys.getsizeof(column) for column in columns)
