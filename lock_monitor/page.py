"""The status page at `/`, from the same document as `/locks` and the `locks` table: complete
without JavaScript, every text from Redis escaped, its script and style served as files.
`lock-monitor locks` never imports it, nor the charts it draws."""

from __future__ import annotations

import html
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from lock_monitor.charts import charts
from lock_monitor.locks import VALUE_DISPLAY_LIMIT
from lock_monitor.views import (
    UNKNOWN,
    ago,
    current_counts,
    events_summary,
    from_pass_note,
    held_for,
    printable,
    seconds,
    stuck_first,
)

if TYPE_CHECKING:
    from lock_monitor.history import Series, Window


def _html_text(text: str) -> str:
    """Text for the page: printable, then HTML-escaped."""
    return html.escape(printable(text))


# The page's own copy of the exporter's policy (a <meta> cannot carry frame-ancestors): the
# page must keep working under it, with its script and style as files of this origin.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'"
)
READ_COMMANDS = {"string": "GET", "hash": "HGETALL"}  # to read a lock; any other type: TYPE


def inspect_command(document: dict[str, Any], lock: dict[str, Any]) -> str | None:
    """A `redis-cli` command that reads (never deletes) the lock, quoted for a POSIX shell;
    None when the key as shown is not exactly the key in Redis (cut, or with bytes escaped)."""
    key = lock["key"]
    if "\\" in key or len(key) > VALUE_DISPLAY_LIMIT or not key.isprintable():
        return None
    if document["mode"] == "sentinel":
        if not document["nodes"]:
            return None
        host, _, port = document["nodes"][0]["node"].rpartition(":")
        where = ["-h", host, "-p", port]
    else:
        url = urlsplit(document["target"])
        user, _, hostport = url.netloc.rpartition("@")
        where = ["-u", url._replace(netloc=hostport).geturl()]
        where += ["--user", user, "--askpass"] if user else []
        where += ["-c"] if document["mode"] == "cluster" else []
    command = READ_COMMANDS.get(lock["kind"], "TYPE")
    return shlex.join(["redis-cli", *where, command, key])


def _ago(seconds_ago: float) -> str:
    return f'<span class="ago" data-ago="{seconds_ago:.3f}">{ago(seconds_ago)}</span>'


def _status(document: dict[str, Any]) -> str:
    """Redis' health and how old the data is; when Redis is down, that the data is old."""
    last, up = document["pass"], document["redis_up"]
    error = _html_text((document["last_error"] or "").rstrip("."))  # the page ends the sentence
    if up is None:
        text, state = "Waiting for the first pass.", "waiting"
    elif up:
        text, state = f"Redis up. Data from the pass {_ago(last['seconds_ago'])} ago.", "up"
    elif last is None:
        text = f"<strong>Redis cannot be read</strong>: {error}. No pass has succeeded yet."
        state = "down"
    else:
        text = (
            f"<strong>Redis cannot be read</strong>: {error}. Below is the last good data, "
            f"from {_ago(last['seconds_ago'])} ago: <strong>not the current state</strong>."
        )
        state = "down"
    return f'<p id="status" class="status {state}" data-live role="status">{text}</p>'


def _counts(document: dict[str, Any]) -> str:
    if document["pass"] is None:
        return ""
    counts = current_counts(document)  # the same numbers as /metrics
    oldest = counts.get("oldest_age_seconds")  # live; a pass has its oldest lock listed
    if oldest is None:
        oldest = max((lock["age_seconds"] or 0.0 for lock in document["locks"]), default=0.0)
    tiles = [
        ("active", "active", counts["active"]),
        ("stuck", "stuck alert" if counts["stuck"] else "stuck", counts["stuck"]),
        ("without TTL", "without-ttl", counts["without_ttl"]),
        ("oldest age", "oldest", seconds(oldest)),
    ]
    return "".join(
        f'<div class="tile {css}" data-count="{label}"><b>{value}</b> <span>{label}</span></div>'
        for label, css, value in tiles
    )


def _age_cell(document: dict[str, Any], lock: dict[str, Any]) -> str:
    """The age, with a bar against the stuck threshold (red past it)."""
    if lock["age_seconds"] is None:
        return UNKNOWN
    threshold = document["stuck_threshold_seconds"]
    bar = (
        f'<meter min="0" max="{max(threshold * 2, 1):g}" low="{threshold / 2:g}" '
        f'high="{threshold:g}" '
        f'optimum="0" value="{lock["age_seconds"]:.1f}"></meter>'
    )
    since = (
        ' <span class="hint">since first seen</span>' if lock["age_source"] == "first_seen" else ""
    )
    return f"{bar} {seconds(lock['age_seconds'])}{since}"


def _row(document: dict[str, Any], lock: dict[str, Any]) -> str:
    esc = _html_text
    command = inspect_command(document, lock)
    cells = [
        ("Key", f'<code class="key">{esc(lock["key"])}</code>'),
        ("Holder", f'<span class="holder">{esc(lock["holder"] or "—")}</span>'),
        ("Age", _age_cell(document, lock)),
        ("TTL", seconds(lock["ttl_seconds"])),
        ("Value", f'<span class="value">{esc(lock["value"])}</span>'),
        (
            "Inspect",
            f'<code class="cmd">{esc(command)}</code>'
            if command
            else '<span class="hint">key not shown exactly</span>',
        ),
    ]
    tds = "".join(f'<td data-label="{name}">{cell}</td>' for name, cell in cells)
    css = ' class="stuck"' if lock["stuck"] else ""
    return f'<tr{css} data-key="{esc(lock["key"])}">{tds}</tr>'


def _table(document: dict[str, Any]) -> str:
    """Stuck locks first (highlighted), then the rest, each group oldest first."""
    if not document["locks"]:
        return '<p class="empty">No locks held.</p>' if document["pass"] else ""
    ordered = stuck_first(document["locks"])
    heads = "".join(f"<th>{name}</th>" for name in ("Key", "Holder", "Age", "TTL", "Value"))
    return (
        f"<table><thead><tr>{heads}<th>Inspect (read-only)</th></tr></thead><tbody>"
        + "".join(_row(document, lock) for lock in ordered)
        + "</tbody></table>"
    )


def _details(document: dict[str, Any]) -> str:
    esc = _html_text
    last, parts = document["pass"], []
    if last is not None:
        parts.append(
            f"<p>The last successful pass took {last['duration_seconds'] * 1000:.1f} ms over "
            f"{last['keys_scanned']} keys; stuck means held longer than "
            f"{document['stuck_threshold_seconds']:g} s.</p>"
        )
    if document["pacing_active"]:
        parts.append(
            f"<p>Pacing: passes are long, so the wait is stretched to "
            f"{document['next_pass_delay_seconds']:.1f}s to bound the load on Redis.</p>"
        )
    nodes = "".join(
        f"<li>{esc(n['node'])}: {'up' if n['up'] else 'DOWN'}</li>" for n in document["nodes"]
    )
    if nodes:
        parts.append(f"<p>Read in the last pass ({esc(document['mode'])}):</p><ul>{nodes}</ul>")
    return "".join(parts)


def status_page(
    document: dict[str, Any],
    window: Window | None = None,
    series: Sequence[Series] = (),
    refresh_seconds: float = 5.0,
) -> str:
    """The page at `/`: complete without JavaScript; its script (static/page.js) refreshes
    the `data-live` parts in place and filters the table. Everything shown is escaped."""
    esc = _html_text
    last, up = document["pass"], document["redis_up"]
    stale = " stale" if up is False else ""
    if up is False:
        title = "Redis DOWN"
    elif last is None:
        title = "waiting"
    else:
        counts = current_counts(document)
        title = f"{counts['stuck']} stuck, {counts['active']} active"
    drawn = charts(window, series, document["stuck_threshold_seconds"]) if window else ""
    caption = ""
    if last is not None:
        shown, active = len(document["locks"]), last["active"]
        every = f"all {shown} locks" if shown == active else f"the {shown} oldest of {active} locks"
        note = from_pass_note(document)
        caption = f'<p class="caption">{every}, stuck first{f" ({note})" if note else ""}</p>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{PAGE_POLICY}">
<link rel="icon" href="data:,">
<title>lock-monitor: {title}</title>
<link rel="stylesheet" href="/static/page.css">
<script src="/static/page.js" defer></script>
</head><body data-refresh="{refresh_seconds:g}">
<header><h1>lock-monitor</h1>
<p class="target">{esc(document["target"])} ({esc(document["mode"])})</p></header>
{_status(document)}
<p id="exporter" class="status down" hidden></p>
<section id="counts" class="counts{stale}" data-live>{_counts(document)}</section>
<section id="charts" class="charts{stale}" data-live>{drawn}</section>
<section id="events" class="events" data-live>{events_section(document.get("events"))}</section>
<h2>Locks</h2>
<p class="filter" hidden><label>Filter by key <input id="filter" type="search"
 autocomplete="off" placeholder="part of a key"></label> <span id="shown"></span></p>
<section id="locks" class="locks{stale}" data-live>{caption}
{_table(document)}</section>
<section id="details" class="details" data-live>{_details(document)}</section>
<noscript><p>Reload the page for newer data.</p></noscript>
<footer><a href="/metrics">/metrics</a> · <a href="/locks">/locks</a> (JSON) ·
<a href="/healthz">/healthz</a> · <a href="/readyz">/readyz</a></footer>
</body></html>
"""


def events_section(events: dict[str, Any] | None) -> str:
    """The page's keyspace-events part: state and counters, the locks that ended badly."""
    if events is None:
        return ""
    esc = _html_text
    ends = "".join(
        f'<tr><td data-label="Key"><code class="key">{esc(end["key"])}</code></td>'
        f'<td data-label="Outcome">{esc(end["outcome"])}</td>'
        f'<td data-label="Held">{held_for(end["hold_seconds"])}</td></tr>'
        for end in events["recent_ends"]
    )
    table = (
        "<p>The last evicted or expired locks, newest first:</p><table><thead><tr><th>Key</th>"
        f"<th>Outcome</th><th>Held</th></tr></thead><tbody>{ends}</tbody></table>"
        if ends
        else ""
    )
    live = " The counts above are live." if events["live"] else ""
    return f"<h2>Keyspace events</h2><p>{esc(events_summary(events))}.{live}</p>{table}"
