"""`lock-monitor locks --watch`: the table fit to the terminal, refreshed in place."""

from __future__ import annotations

import os
import shutil
import time
import unicodedata
from collections.abc import Callable
from typing import Any

import click

from lock_monitor.errors import OperatorError
from lock_monitor.triage import stale_warning
from lock_monitor.views import lock_table, printable


def screen(document: dict[str, Any], header: str, size: os.terminal_size) -> str:
    """The table, stuck locks first, fit to the terminal as `watch` does: nothing wraps (each
    line is cut to the width) and nothing scrolls (rows past the height give way to "… N
    more"), so the header, the stuck locks and the counts stay in sight."""
    table = lock_table(document).splitlines()
    shown = len(document["locks"])
    head, rows, tail = table[0], table[1 : shown + 1], table[shown + 1 :]
    warning = stale_warning(document)
    tail += [f"warning: {warning}"] if warning else []
    room = size.lines - 3 - len(tail)  # the header, a blank line and the table's head
    if len(rows) > room:
        kept = max(room - 1, 0)
        rows = [*rows[:kept], f"… {len(rows) - kept} more"]
    return fitted([header, "", head, *rows, *tail], size)


def fitted(lines: list[str], size: os.terminal_size) -> str:
    """The lines that fit the terminal's height, each cut to its width."""
    return "\n".join(fit(line, size.columns) for line in lines[: size.lines])


def fit(line: str, columns: int) -> str:
    """`line` cut to `columns` terminal cells (a wide character takes two), ending in "…"."""
    widths = [_cells(char) for char in line]
    if sum(widths) <= columns:
        return line
    used, end = 0, 0
    while end < len(line) and used + widths[end] <= columns - 1:
        used += widths[end]
        end += 1
    return line[:end] + "…"


def _cells(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def watch_table(read: Callable[[], dict[str, Any]], every: float, source: str) -> int:
    """Like `watch`: clear, print, wait; a failed read is shown in place and retried."""
    try:
        while True:
            header = f"Every {every:g}s: lock-monitor locks ({source})  {time.strftime('%H:%M:%S')}"
            size = shutil.get_terminal_size()
            try:
                text = screen(read(), header, size)
            except OperatorError as exc:
                text = fitted([header, "", f"error: {printable(str(exc))}"], size)
            click.clear()
            click.echo(text, nl=False)  # a last newline would scroll the first line away
            time.sleep(every)
    except KeyboardInterrupt:
        click.echo()
        return 0
