"""Lock state: what a lock's value says about its age, and whether it is stuck.

Everything here is pure (no Redis), so the rules can be tested exhaustively.
Redis keeps no creation time for keys, so a lock's age comes from its value when the
holder wrote a timestamp there (the backend writes epoch milliseconds), and otherwise
from the first time this process saw that key holding that value. A key released and taken
again holds a new value: it is a new lock. `classify` is the rule for one lock; the
tracker (`tracker.py`) applies it a page at a time and must agree with it.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

# Epoch timestamps this far apart cover 2001..2286: anything outside is a token, not a time.
_SECONDS_RANGE = (1e9, 1e10)
_MILLIS_RANGE = (1e12, 1e13)
VALUE_DISPLAY_LIMIT = 200
# The bytes of a value that are read: a timestamp, the part displayed, and enough to tell
# that the value is longer. Values alike in these bytes are the same value.
VALUE_PREFIX = 256
AgeSource = Literal["value", "first_seen"]


class Lock(NamedTuple):
    """A lock classified for display and counting."""

    key: str
    value: str
    kind: str
    ttl_seconds: float | None  # None: the lock never expires
    age_seconds: float
    age_source: AgeSource
    stuck: bool


def parse_timestamp(value: bytes) -> float | None:
    """Epoch seconds from `<epoch-ms>`, `<epoch-s>` or `<epoch>:<holder...>`, else None."""
    head = value.partition(b":")[0]
    whole, dot, fraction = head.partition(b".")
    if not whole.isdigit() or (dot and not fraction.isdigit()):
        return None
    number = float(head)
    if _MILLIS_RANGE[0] <= number < _MILLIS_RANGE[1]:
        return number / 1000.0
    if _SECONDS_RANGE[0] <= number < _SECONDS_RANGE[1]:
        return number
    return None


def display(raw: bytes | None, kind: str) -> str:
    """Printable text for keys and values, bounded so one odd lock cannot flood a page."""
    if raw is None:
        return f"<{kind}>"
    text = raw[:VALUE_DISPLAY_LIMIT].decode("utf-8", "backslashreplace")
    return text + ("…" if len(raw) > VALUE_DISPLAY_LIMIT else "")


def classify(
    key: bytes,
    value: bytes | None,
    kind: str,
    pttl_ms: int,
    now: float,
    first_seen: float,
    stuck_threshold: float,
) -> Lock:
    """The rule for one lock: its age from the timestamp in its value, else from
    `first_seen`, the Redis time this process first saw the key holding this value."""
    stamped = parse_timestamp(value) if value is not None else None
    source: AgeSource = "first_seen" if stamped is None else "value"
    age = max(0.0, now - (first_seen if stamped is None else stamped))
    return Lock(
        key=display(key, "key"),
        value=display(value, kind),
        kind=kind,
        ttl_seconds=None if pttl_ms < 0 else pttl_ms / 1000.0,
        age_seconds=age,
        age_source=source,
        stuck=age > stuck_threshold,
    )
