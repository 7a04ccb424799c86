"""How a snapshot is shown: one JSON document, and from it the lock table.

`/locks` and `lock-monitor locks --json` print the document itself; the table (`locks`) and
the page (`/`, in `page`) are rendered from it, so the three never disagree on a field or a
spelling. Keys and values arrive bounded by `locks.display` but may hold any character:
every human view passes its text through `printable` (the page then HTML-escapes it); JSON
stays exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lock_monitor.locks import Lock

if TYPE_CHECKING:  # types only: `lock-monitor locks` imports this without the daemon's parts
    from lock_monitor.events import EventsView
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


def ago(seconds_ago: float) -> str:
    """How long ago, in words a glance reads (the page's script keeps it counting)."""
    if seconds_ago < 120:
        return f"{max(seconds_ago, 0):.0f} s"
    if seconds_ago < 7200:
        return f"{seconds_ago / 60:.0f} min"
    return f"{seconds_ago / 3600:.1f} h"
