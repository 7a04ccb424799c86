"""The history's charts: inline SVG with gaps kept, scaled to round numbers."""

from __future__ import annotations

import pytest

from lock_monitor.charts import charts, nice_ceiling, runs
from lock_monitor.history import PASS_SERIES, TOTAL, History, Series

T0 = 1_800_000_000.0


@pytest.mark.parametrize(
    ("value", "ceiling"), [(0, 1), (0.4, 1), (1, 1), (3, 5), (7, 10), (12, 20), (99, 100)]
)
def test_the_scale_ends_on_a_round_number(value: float, ceiling: float) -> None:
    assert nice_ceiling(value) == ceiling


def test_a_missing_sample_breaks_the_line() -> None:
    times = [T0, T0 + 10, T0 + 20, T0 + 50, T0 + 60, T0 + 70]
    values: list[float | None] = [1, 2, None, 3, 4, 5]
    assert runs(times, values, 10) == [
        [(T0, 1), (T0 + 10, 2)],
        [(T0 + 50, 3), (T0 + 60, 4), (T0 + 70, 5)],  # the 30 s without a sample: a gap
    ]


def history_of(samples: list[dict[str, float]], series: list[Series] | None = None) -> History:
    history = History(series or PASS_SERIES)
    for i, values in enumerate(samples):
        history.record(T0 + 10 * i, values)
    return history


def test_one_chart_per_series_with_the_threshold_on_the_age_chart() -> None:
    sample = {"active": 4, "stuck": 1, "without_ttl": 0, "oldest_age_seconds": 42}
    window = history_of([sample, sample | {"active": 6}]).window(T0 + 15)
    drawn = charts(window, PASS_SERIES, threshold=30)
    assert drawn.count("<figure") == 4
    assert drawn.count('class="threshold"') == 1  # only the chart in seconds
    assert drawn.count("<polyline") == 4
    assert "Active locks</span>: 6 in the last 10 s, peak 6" in drawn
    assert "Oldest lock age</span>: 42 s in the last 10 s, peak 42 s" in drawn
    assert ">50 s</text>" in drawn  # the age chart's scale
    assert "style=" not in drawn


def test_a_lone_sample_is_a_dot_and_no_sample_says_so() -> None:
    window = history_of([{"active": 1}]).window(T0 + 5)
    drawn = charts(window, PASS_SERIES, threshold=30)
    assert drawn.count("<circle") == 1
    assert "Stuck locks</span>: no data" in drawn


def test_series_sharing_a_chart_are_drawn_together_with_a_legend() -> None:
    ends = [
        Series("released", "Lock ends", merge=TOTAL),
        Series("expired", "Lock ends", merge=TOTAL),
    ]
    window = history_of([{"released": 5, "expired": 1}] * 2, ends).window(T0 + 15)
    drawn = charts(window, ends, threshold=30)
    assert drawn.count("<figure") == 1
    assert 'class="line-0"' in drawn
    assert 'class="line-1"' in drawn
    assert '<span class="key-1">expired</span>: 1 in the last 10 s, peak 1' in drawn
