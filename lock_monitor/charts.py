"""Line charts of the history as inline SVG, drawn on the server.

No script, no library, no network: the page works offline and without JavaScript, and under
a CSP without 'unsafe-inline' (colours and strokes come from classes in the stylesheet, never
from style attributes).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from lock_monitor.history import Series, Window

WIDTH, HEIGHT = 600, 140
LEFT, RIGHT, TOP, BOTTOM = 44, 592, 8, 118  # the plot area inside the view box


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (at least 1)."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return float(next(step * power for step in (1, 2, 5, 10) if step * power >= value))


def number(value: float, unit: str) -> str:
    text = f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"
    return f"{text} {unit}" if unit else text


def runs(
    times: Sequence[float], values: Sequence[float | None], step: float
) -> list[list[tuple[float, float]]]:
    """The points split where a sample is missing: a gap (Redis down) is never bridged."""
    result: list[list[tuple[float, float]]] = []
    previous: float | None = None
    for at, value in zip(times, values, strict=True):
        if value is None:
            previous = None
            continue
        if previous is None or at - previous > step * 1.5:
            result.append([])
        result[-1].append((at, value))
        previous = at
    return result


def line_chart(
    title: str, series: Sequence[Series], window: Window, threshold: float | None = None
) -> str:
    """One chart: a line per series, the latest value of each in the caption."""
    unit = series[0].unit
    known = [v for s in series for v in window.values[s.name] if v is not None]
    top = nice_ceiling(max([*known, threshold or 0.0, 0.0]))
    span = window.end - window.start

    def x(at: float) -> float:
        return LEFT + (RIGHT - LEFT) * (at - window.start) / span

    def y(value: float) -> float:
        return BOTTOM - (BOTTOM - TOP) * min(value, top) / top

    parts = [
        f'<line class="grid" x1="{LEFT}" y1="{BOTTOM}" x2="{RIGHT}" y2="{BOTTOM}"/>',
        f'<line class="grid" x1="{LEFT}" y1="{TOP}" x2="{RIGHT}" y2="{TOP}"/>',
        f'<text class="axis" x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end">'
        f"{number(top, unit)}</text>",
        f'<text class="axis" x="{LEFT - 4}" y="{BOTTOM}" text-anchor="end">0</text>',
    ]
    minutes = round(span / 60)
    ticks = (
        (LEFT, "start", f"-{minutes} min"),
        ((LEFT + RIGHT) / 2, "middle", f"-{minutes / 2:g} min"),
        (RIGHT, "end", "now"),
    )
    for at, anchor, label in ticks:
        parts.append(
            f'<text class="axis" x="{at:.0f}" y="{HEIGHT - 6}" text-anchor="{anchor}">'
            f"{label}</text>"
        )
    if threshold is not None:
        level = y(threshold)
        parts.append(
            f'<line class="threshold" x1="{LEFT}" y1="{level:.1f}" x2="{RIGHT}" y2="{level:.1f}"/>'
        )
    caption = []
    for index, one in enumerate(series):
        values = window.values[one.name]
        for run in runs(window.times, values, window.step):
            if len(run) == 1:
                (at, value), *_ = run
                parts.append(
                    f'<circle class="line-{index}" cx="{x(at):.1f}" cy="{y(value):.1f}" r="2"/>'
                )
            else:
                points = " ".join(f"{x(at):.1f},{y(value):.1f}" for at, value in run)
                parts.append(f'<polyline class="line-{index}" points="{points}"/>')
        latest = next((v for v in reversed(values) if v is not None), None)
        peak = max((v for v in values if v is not None), default=None)
        shown = "no data"
        if latest is not None and peak is not None:
            shown = (
                f"{number(latest, one.unit)} in the last {window.step:g} s, "
                f"peak {number(peak, one.unit)}"
            )
        name = html.escape(one.name.replace("_", " ") if len(series) > 1 else title)
        caption.append(f'<span class="key-{index}">{name}</span>: {shown}')
    return (
        f'<figure class="chart" data-chart="{html.escape(title)}">'
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{html.escape(title)}">'
        f"<title>{html.escape(title)} over the last {minutes} minutes</title>"
        + "".join(parts)
        + f"</svg><figcaption>{'; '.join(caption)}</figcaption></figure>"
    )


def charts(window: Window, series: Sequence[Series], threshold: float) -> str:
    """Every chart of the history, in the order its series were declared; the stuck threshold
    is drawn on charts in seconds."""
    groups: dict[str, list[Series]] = {}
    for one in series:
        groups.setdefault(one.chart, []).append(one)
    return "".join(
        line_chart(title, members, window, threshold if members[0].unit == "s" else None)
        for title, members in groups.items()
    )
