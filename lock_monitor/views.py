"""How a snapshot is shown: one JSON document, and from it the lock table and the status page.

`/locks` and `lock-monitor locks --json` print the document itself; the table (`locks`) and
the page (`/`) are rendered from it, so the three never disagree on a field or a spelling.
Keys and values arrive bounded by `locks.display` but may hold any character: every human
view passes its text through `printable` (the page then HTML-escapes it); JSON stays exact.
"""

from __future__ import annotations

import html
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from lock_monitor.locks import VALUE_DISPLAY_LIMIT, Lock

if TYPE_CHECKING:  # types only: `lock-monitor locks` imports this without the daemon's parts
    from lock_monitor.events import EventsView
    from lock_monitor.history import Series, Window
    from lock_monitor.monitor import MonitorState

NO_TTL = "never"  # how a lock without a TTL reads wherever a person reads it
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
UNKNOWN = "unknown"  # an age one pass cannot know: no timestamp in the value
UNKNOWN_AGE_WHY = (
    "their values hold no timestamp, so one pass cannot tell their age; "
    "the daemon can: lock-monitor locks --from http://HOST:9150"
)


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


def _html_text(text: str) -> str:
    """Text for the page: printable, then HTML-escaped."""
    return html.escape(printable(text))


def holder(lock: Lock) -> str | None:
    """Who holds it, from a `<epoch>:<holder>` value; None when the value says nothing."""
    if lock.age_source != "value":
        return None
    return lock.value.partition(":")[2] or None


def lock_entry(lock: Lock, one_pass: bool) -> dict[str, Any]:
    """A lock in the document. One pass has never seen a lock before, so an age from first
    sight would read 0: it is unknown (null), and so is whether the lock is stuck."""
    entry = lock._asdict() | {"holder": holder(lock)}
    if one_pass and lock.age_source == "first_seen":
        entry |= {"age_seconds": None, "age_source": UNKNOWN, "stuck": None}
    return entry


def status_document(
    state: MonitorState,
    target: str,
    mode: str,
    now: float,
    locks: Sequence[Lock] | None = None,
    one_pass: bool = False,
    *,
    stuck_threshold: float,
    events: EventsView | None = None,
) -> dict[str, Any]:
    """The document (its schema is in the docs): `locks` defaults to the snapshot's oldest;
    `one_pass` is for `lock-monitor locks`, which has no next pass to wait for and no
    memory of earlier sightings; `events` is the keyspace events' view (None: not followed):
    a lock they saw end since the pass is left out."""
    snapshot = state.snapshot
    if locks is None:
        locks = () if snapshot is None else snapshot.oldest
    if events is not None and events.ended:
        locks = [lock for lock in locks if lock.key not in events.ended]
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
            "unknown_age": snapshot.first_seen if one_pass else 0,
        },
        "stuck_threshold_seconds": stuck_threshold,
        "next_pass_delay_seconds": None if one_pass else round(state.delay_seconds, 3),
        "pacing_active": state.paced,
        "locks": [lock_entry(lock, one_pass) for lock in locks],
        "events": None if events is None else events_document(events),
    }


def events_document(view: EventsView) -> dict[str, Any]:
    """The keyspace events: their state, the live counts, the counters since start."""
    status, counters = view.status, view.counters
    return {
        "mode": status.mode,
        "state": status.state,
        "reason": status.reason,
        "up": status.up,
        "nodes": [{"node": name, "state": state} for name, state in status.nodes],
        "live": None
        if view.counts is None
        else {
            "active": view.counts.active,
            "stuck": view.counts.stuck,
            "without_ttl": view.counts.without_ttl,
            "oldest_age_seconds": round(view.counts.oldest_age_seconds, 3),
        },
        "counters": None
        if not status.ever_live
        else {
            "acquisitions": counters.acquisitions,
            "renewals": counters.renewals,
            **counters.releases,
            "received": counters.received,
            "reconnects": status.reconnects,
            "corrections": counters.corrections,
        },
        "recent_ends": [
            {
                "key": end.key,
                "outcome": end.outcome,
                "hold_seconds": None if end.hold_seconds is None else round(end.hold_seconds, 3),
                "ended_at": round(end.ended_at, 3),
            }
            for end in reversed(counters.recent)
        ],
    }


def events_summary(events: dict[str, Any]) -> str:
    """One line for people: the state, and the counters since start."""
    line = f"events {events['state']}"
    if events["reason"]:
        line += f" ({printable(events['reason'])})"
    counters = events["counters"]
    if counters:
        line += (
            f"; since start {counters['acquisitions']} acquired, {counters['released']} released, "
            f"{counters['expired']} expired, {counters['evicted']} evicted, "
            f"{counters['renewals']} renewed"
        )
    return line


def current_counts(document: dict[str, Any]) -> dict[str, Any]:
    """The counts as /metrics has them now: the events' live set while it is current, else
    the last pass (whose `locks` the document lists either way)."""
    live: dict[str, Any] | None = (document.get("events") or {}).get("live")
    return live or document["pass"]


def from_pass_note(document: dict[str, Any]) -> str | None:
    """While the counts are live, that the locks listed are the last pass's."""
    if not (document.get("events") or {}).get("live"):
        return None
    return (
        f"counts now, from keyspace events; the locks listed are from the pass "
        f"{ago(document['pass']['seconds_ago'])} ago, without those that ended since"
    )


def held_for(value: float | None) -> str:
    """How long a lock that ended was held; unknown when its acquisition was not seen."""
    return UNKNOWN if value is None else f"{value:.3f}s"


def seconds(value: float | None) -> str:
    """An age or a TTL for people: tenths of a second; a missing TTL is `NO_TTL`."""
    return NO_TTL if value is None else f"{value:.1f}s"


def age(lock: dict[str, Any]) -> str:
    return UNKNOWN if lock["age_seconds"] is None else seconds(lock["age_seconds"])


def stuck_word(lock: dict[str, Any]) -> str:
    return "?" if lock["stuck"] is None else "yes" if lock["stuck"] else "no"


def stuck_first(locks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stuck locks, then the others, each group in its order (oldest first)."""
    return sorted(locks, key=lambda lock: lock["stuck"] is not True)


def lock_table(document: dict[str, Any]) -> str:
    """The locks as aligned columns (the value last: it may be long), stuck ones first, the
    keyspace events' line and last ends when there are events, then the counts, and why some
    ages are unknown when they are."""
    header = ("KEY", "AGE", "TTL", "STUCK", "VALUE")
    lines = [header] + [
        (
            printable(lock["key"]),
            age(lock),
            seconds(lock["ttl_seconds"]),
            stuck_word(lock),
            printable(lock["value"]),
        )
        for lock in stuck_first(document["locks"])
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    rows = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False))
        + "  "
        + line[-1]
        for line in lines
    ]
    last, counts = document["pass"], current_counts(document)
    summary = (
        f"{counts['active']} active, {counts['stuck']} stuck, {counts['without_ttl']} without TTL "
        f"({printable(document['target'])})"
    )
    note = from_pass_note(document)
    unknown = last.get("unknown_age", 0)
    why = [f"{unknown} of unknown age: {UNKNOWN_AGE_WHY}"] if unknown else []
    events = document.get("events")
    ends = (
        []
        if not events
        else [
            f"{end['outcome']}: {printable(end['key'])} (held {held_for(end['hold_seconds'])})"
            for end in events["recent_ends"]
        ]
    )
    return "\n".join(
        [
            *rows,
            *([events_summary(events)] if events else []),
            *ends,
            summary,
            *([note] if note else []),
            *why,
        ]
    )


# --- the status page -------------------------------------------------------------------------

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


def ago(seconds_ago: float) -> str:
    """How long ago, in words a glance reads (the page's script keeps it counting)."""
    if seconds_ago < 120:
        return f"{max(seconds_ago, 0):.0f} s"
    if seconds_ago < 7200:
        return f"{seconds_ago / 60:.0f} min"
    return f"{seconds_ago / 3600:.1f} h"


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
    from lock_monitor.charts import charts  # the page alone draws them: `locks` never loads them

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
