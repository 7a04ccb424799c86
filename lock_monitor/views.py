"""How a snapshot is shown: one JSON document, and from it the lock table and the status page.

`/locks` and `lock-monitor locks --json` print the document itself; the table (`locks`) and
the page (`/`) are rendered from it, so the three never disagree on a field or a spelling.
Keys and values arrive bounded by `locks.display` but may hold any character: every human
view passes its text through `printable` (the page then HTML-escapes it); JSON stays exact.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from lock_monitor.locks import Lock
from lock_monitor.monitor import MonitorState

NO_TTL = "never"  # how a lock without a TTL reads wherever a person reads it
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """`text` with every control or invisible format character shown as an escape (`\\x1b`,
    `\\n`, `\\u202e`), for terminals and pages: data from Redis must not clear a screen, set a
    window title, draw fake rows or reverse text. The one function for all human output."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def status_document(
    state: MonitorState,
    target: str,
    mode: str,
    now: float,
    locks: Sequence[Lock] | None = None,
    one_pass: bool = False,
) -> dict[str, Any]:
    """The document (its schema is in the docs): `locks` defaults to the snapshot's oldest;
    `one_pass` is for `lock-monitor locks`, which has no next pass to wait for."""
    snapshot = state.snapshot
    if locks is None:
        locks = () if snapshot is None else snapshot.oldest
    return {
        "target": target,
        "mode": mode,
        "redis_up": state.redis_up,
        "last_error": state.last_error,
        "nodes": [{"node": name, "up": up} for name, up in state.nodes],
        "pass": None
        if snapshot is None
        else {
            "completed_at": snapshot.completed_at,
            "seconds_ago": round(now - snapshot.completed_at, 3),
            "duration_seconds": round(snapshot.duration_seconds, 6),
            "keys_scanned": snapshot.keys_scanned,
            "active": snapshot.active,
            "stuck": snapshot.stuck,
            "without_ttl": snapshot.without_ttl,
        },
        "next_pass_delay_seconds": None if one_pass else round(state.delay_seconds, 3),
        "pacing_active": state.paced,
        "locks": [lock._asdict() for lock in locks],
    }


def seconds(value: float | None) -> str:
    """An age or a TTL for people: tenths of a second; a missing TTL is `NO_TTL`."""
    return NO_TTL if value is None else f"{value:.1f}s"


def lock_table(document: dict[str, Any]) -> str:
    """The locks as aligned columns (the value last: it may be long), then the counts."""
    header = ("KEY", "AGE", "TTL", "STUCK", "VALUE")
    lines = [header] + [
        (
            printable(lock["key"]),
            seconds(lock["age_seconds"]),
            seconds(lock["ttl_seconds"]),
            "yes" if lock["stuck"] else "no",
            printable(lock["value"]),
        )
        for lock in document["locks"]
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    rows = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False))
        + "  "
        + line[-1]
        for line in lines
    ]
    last = document["pass"]
    summary = (
        f"{last['active']} active, {last['stuck']} stuck, {last['without_ttl']} without TTL "
        f"({printable(document['target'])})"
    )
    return "\n".join([*rows, summary])


def _html_text(text: str) -> str:
    return html.escape(printable(text))


def status_page(document: dict[str, Any]) -> str:
    """The page at `/`: health, the last pass, the oldest locks; everything shown is escaped."""
    esc = _html_text
    last = document["pass"]
    rows = "".join(
        f"<tr><td>{esc(lock['key'])}</td><td>{seconds(lock['age_seconds'])}</td>"
        f"<td>{seconds(lock['ttl_seconds'])}</td><td>{'yes' if lock['stuck'] else ''}</td>"
        f"<td>{esc(lock['value'])}</td></tr>"
        for lock in document["locks"]
    )
    if last is None:
        summary = "<p>No successful pass yet.</p>"
    else:
        summary = (
            f"<p>Last successful pass {last['seconds_ago']:.1f}s ago, took "
            f"{last['duration_seconds'] * 1000:.1f} ms over {last['keys_scanned']} keys.</p>"
            f"<p><b>{last['active']}</b> active, <b>{last['stuck']}</b> stuck, "
            f"<b>{last['without_ttl']}</b> without TTL.</p>"
        )
    health = "up" if document["redis_up"] else "DOWN"
    error = f"<p>Last error: {esc(document['last_error'])}</p>" if document["last_error"] else ""
    nodes = "".join(
        f"<li>{esc(n['node'])}: {'up' if n['up'] else 'DOWN'}</li>" for n in document["nodes"]
    )
    if nodes:
        nodes = f"<p>Read in the last pass ({esc(document['mode'])}):</p><ul>{nodes}</ul>"
    pacing = (
        f"<p>Pacing: passes are long, so the wait is stretched to "
        f"{document['next_pass_delay_seconds']:.1f}s to bound the load on Redis.</p>"
        if document["pacing_active"]
        else ""
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>lock-monitor</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px;text-align:left}}</style>
</head><body>
<h1>lock-monitor</h1>
<p>Target: {esc(document["target"])} ({esc(document["mode"])}), Redis {health}</p>
{error}{nodes}{summary}{pacing}
<h2>Oldest locks</h2>
<table><tr><th>Key</th><th>Age</th><th>TTL</th><th>Stuck</th><th>Holder value</th></tr>
{rows}</table>
<p><a href="/metrics">/metrics</a> · <a href="/locks">/locks</a> · <a href="/healthz">/healthz</a>
· <a href="/readyz">/readyz</a></p>
</body></html>
"""
