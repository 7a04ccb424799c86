"""Lock state: what a lock's value says about its age, and whether it is stuck.

Everything here is pure (no Redis), so the rules can be tested exhaustively.
Redis keeps no creation time for keys, so a lock's age comes from its value when the
holder wrote a timestamp there (the backend writes epoch milliseconds), and otherwise
from the first time this process saw that key holding that value.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

# Epoch timestamps this far apart cover 2001..2286: anything outside is a token, not a time.
_SECONDS_RANGE = (1e9, 1e10)
_MILLIS_RANGE = (1e12, 1e13)
VALUE_DISPLAY_LIMIT = 200

AgeSource = Literal["value", "first_seen"]


class RawLock(NamedTuple):
    """One lock as read from Redis in one pass."""

    key: bytes
    value: bytes | None  # None for locks that are not strings (a Redisson hash, say)
    pttl_ms: int  # -1: no TTL
    kind: str  # the Redis type: "string", "hash", ...
    now: float  # Redis TIME at the start of the pass on the node that holds the key


class Lock(NamedTuple):
    """A lock classified for display and counting (a tuple: cheap to build for every lock)."""

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


class LockTracker:
    """Classifies the locks of successive passes and remembers first sightings.

    Only keys still held are remembered: `finish_pass` forgets the rest, so memory follows
    the number of live locks, not the history of all locks ever seen.
    """

    def __init__(self, stuck_threshold: float) -> None:
        self.stuck_threshold = stuck_threshold
        # key -> (hash of the value it held, Redis time when first seen with that value)
        self._first_seen: dict[bytes, tuple[int, float]] = {}
        self._seen_this_pass: dict[bytes, tuple[int, float]] = {}
        self._run_ids: dict[str, str] = {}  # node -> the run_id of its server, where INFO tells

    def classify(self, raw: RawLock) -> Lock:
        stamped = parse_timestamp(raw.value) if raw.value is not None else None
        source: AgeSource
        if stamped is not None:
            age, source = max(0.0, raw.now - stamped), "value"
        else:
            age, source = self._age_since_first_seen(raw), "first_seen"
        return Lock(
            key=display(raw.key, "key"),
            value=display(raw.value, raw.kind),
            kind=raw.kind,
            ttl_seconds=None if raw.pttl_ms < 0 else raw.pttl_ms / 1000.0,
            age_seconds=age,
            age_source=source,
            stuck=age > self.stuck_threshold,
        )

    def _age_since_first_seen(self, raw: RawLock) -> float:
        fingerprint = hash((raw.kind, raw.value))
        previous = self._first_seen.get(raw.key)
        if previous is None or previous[0] != fingerprint:
            previous = (fingerprint, raw.now)  # new, or released and taken again
        self._seen_this_pass[raw.key] = previous
        return max(0.0, raw.now - previous[1])

    def server_started(self, node: str, run_id: str | None) -> None:
        """Before reading `node`: when its server is not the one read last time (a restart, with
        a new run_id), its keys were all created again, and a key holding the same value as
        before is a new lock. The first sightings are forgotten: ages count afresh."""
        if run_id is None:
            return
        if self._run_ids.get(node, run_id) != run_id:
            self._first_seen = {}
        self._run_ids[node] = run_id

    def finish_pass(self) -> None:
        """Forget keys that were not seen in the pass just completed."""
        self._first_seen, self._seen_this_pass = self._seen_this_pass, {}

    def abandon_pass(self) -> None:
        """A failed pass saw only part of the keys: keep the previous memory intact."""
        self._seen_this_pass = {}
