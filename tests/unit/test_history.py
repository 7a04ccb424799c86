"""The history's ring buffer: bounded, one sample per step, gaps kept."""

from __future__ import annotations

import tracemalloc

import pytest

from lock_monitor.history import CAPACITY, PASS_SERIES, STEP_SECONDS, TOTAL, History, Series

T0 = 1_800_000_000.0  # a multiple of 10


def values(active: float, stuck: float = 0) -> dict[str, float]:
    return {"active": active, "stuck": stuck, "without_ttl": 0, "oldest_age_seconds": 1.5}


def test_passes_in_one_step_are_one_sample_keeping_the_peak() -> None:
    history = History()
    history.record(T0 + 1, values(5, stuck=1))
    history.record(T0 + 4, values(3, stuck=0))
    history.record(T0 + 12, values(4))
    window = history.window(T0 + 15)
    assert window.times == [T0, T0 + 10]
    assert window.values["active"] == [5, 4]
    assert window.values["stuck"] == [1, 0]  # a stuck lock seen once is not lost


def test_a_count_series_adds_up_and_a_missing_value_stays_unknown() -> None:
    acquired = Series("acquired", "Acquisitions", merge=TOTAL)
    history = History([*PASS_SERIES, acquired])
    history.record(T0 + 1, values(1) | {"acquired": 3})
    history.record(T0 + 2, values(1) | {"acquired": 4})
    history.record(T0 + 11, values(1))
    window = history.window(T0 + 12)
    assert window.values["acquired"] == [7, None]


def test_a_step_without_a_pass_is_a_gap() -> None:
    history = History()
    history.record(T0, values(1))
    history.record(T0 + 40, values(2))  # Redis was down for three steps
    assert history.window(T0 + 41).times == [T0, T0 + 40]


def test_the_window_is_the_last_hour_and_the_buffer_never_grows() -> None:
    history = History()
    size = history.nbytes()
    for i in range(CAPACITY * 3):
        history.record(T0 + i * STEP_SECONDS, values(i))
    now = T0 + (CAPACITY * 3 - 1) * STEP_SECONDS
    window = history.window(now)
    assert len(window.times) == CAPACITY == len(window.values["active"])
    assert window.times == sorted(window.times)
    assert window.times[0] > now - CAPACITY * STEP_SECONDS
    assert window.values["active"][-1] == CAPACITY * 3 - 1
    assert history.nbytes() == size


def test_its_memory_is_what_the_docs_say() -> None:
    """docs/status-page.md states the size: 5 arrays of 360 doubles and their headers."""
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    history = History()
    for i in range(CAPACITY * 2):
        history.record(T0 + i * STEP_SECONDS, values(i))
    allocated = sum(
        stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename")
    )
    tracemalloc.stop()
    assert history.nbytes() == 14_800  # 5 arrays of 360 doubles, 80 bytes of header each
    assert allocated < history.nbytes() + 4096  # the object and its dicts, nothing per pass


def test_the_clock_going_back_keeps_the_samples_in_order() -> None:
    history = History()
    history.record(T0 + 20, values(2))
    history.record(T0 + 5, values(9))
    window = history.window(T0 + 21)
    assert (window.times, window.values["active"]) == ([T0 + 20], [2])


def test_a_history_needs_room() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        History(capacity=0)
