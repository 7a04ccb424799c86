"""The set of held locks, kept current by keyspace events between passes.

Pure bookkeeping: no Redis and no threads of its own. Subscribers apply events (one
`eventstream.Stream` per node, in the order the node published them), scrapes read counts,
and each pass reconciles the set with what it read (`reconcile`). One lock guards it all,
and nothing done under it walks every held lock: scrapes read counts kept as the set
changes, and a pass reconciles and sweeps in chunks, so events and scrapes wait for a chunk
at most.

Times are Redis times (epoch seconds by the Redis clock): an event's arrival is converted
with the offset between Redis' clock and this host's monotonic clock, measured at each pass.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from lock_monitor.byage import ByAge
from lock_monitor.livecounts import (
    OUTCOMES,
    Current,
    EventCounters,
    Histogram,
    LiveCounts,
    RecentEnd,
)
from lock_monitor.locks import display
from lock_monitor.passlocks import bounded

UNKNOWN = math.inf  # acquisition time not known: never stuck, never the oldest
LIVE_LOCKS_LIMIT = 1_000_000  # past this the set stops growing and passes take over
RECENT_ENDS = 10  # evicted and expired locks kept for the status page
# A set of keys kept as a dict of None. Holding nothing the cyclic garbage collector tracks,
# such a dict is never tracked itself, so a full collection does not walk its million keys
# (a set is always walked, and a full collection comes every few seconds during a pass).
Keys = dict[bytes, None]


def shown_key(shown: str) -> bytes | None:
    """The raw key that `locks.display` showed as `shown`, when the display is exact: not cut,
    no byte escaped (an escape and a backslash in the key itself read alike); None otherwise."""
    if "\\" in shown or shown.endswith("…"):
        return None
    return shown.encode()


class LiveSet:
    """Held locks: key (`bounded`) -> acquisition time (Redis time, or UNKNOWN)."""

    def __init__(
        self,
        stuck_threshold: float,
        limit: int = LIVE_LOCKS_LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stuck_threshold = stuck_threshold
        self.limit = limit
        self.clock = clock
        self.lock = threading.Lock()
        self.held: dict[bytes, float] = {}
        self.by_age = ByAge()
        self.no_ttl: Keys = {}
        # Held locks whose time is when a pass first saw them, not their acquisition: it
        # tells when they become stuck, but their hold time is not known.
        self.first_seen: Keys = {}
        # Until a pass measures it, this host's clock stands in for Redis'.
        self.offset = time.time() - clock()
        # Fingerprints (`hash`) of the keys that had an event since the current pass started
        # (None between passes): what the pass read of them is older than what the events said.
        self.touched: dict[int, None] | None = None
        self.touched_overflow = False
        self.overflow = False  # more locks than `limit`: incomplete until a pass fits
        self.epoch = 0  # bumped whenever events may have been lost (a subscriber came or went)
        self.subscribed = False  # every node subscribed (set by the subscribers' owner)
        self.verified = False  # and every node is known to publish the events
        self.valid = False  # a pass reconciled the set while subscribed throughout
        self.seeded = False  # a first such pass happened: later differences are corrections
        self.acquisitions = 0
        self.renewals = 0
        self.releases = dict.fromkeys(OUTCOMES, 0)
        self.received = 0
        self.corrections = 0
        self._hold = {outcome: Histogram() for outcome in OUTCOMES}
        self._recent: deque[RecentEnd] = deque(maxlen=RECENT_ENDS)

    # --- time ---------------------------------------------------------------------------

    def redis_now(self) -> float:
        return self.clock() + self.offset

    def measure_offset(self, redis_time: float, local: float) -> None:
        """`redis_time` was Redis' TIME when this host's monotonic clock read `local`."""
        self.offset = redis_time - local

    # --- subscribers come and go --------------------------------------------------------

    def subscriptions_changed(self, subscribed: bool) -> None:
        """A subscriber came or went; `subscribed`: every node is now. Events may be lost."""
        with self.lock:
            self.subscribed = subscribed
            self.epoch += 1
            self.valid = False

    def set_verified(self, verified: bool) -> None:
        with self.lock:
            self.verified = verified

    # --- reading --------------------------------------------------------------------------

    def usable(self) -> bool:
        """The set is current: every node subscribed, and reconciled since."""
        with self.lock:
            return self._usable()

    def _usable(self) -> bool:
        return self.subscribed and self.verified and self.valid and not self.overflow

    def counts(self) -> LiveCounts:
        """The gauges now: stuck-ness is judged from acquisition times at this moment."""
        with self.lock:
            return self._counts()

    def _counts(self) -> LiveCounts:
        now = self.redis_now()
        first = self.by_age.first()
        oldest = UNKNOWN if first is None else first[0]
        return LiveCounts(
            active=len(self.held),
            stuck=self.by_age.count_before(now - self.stuck_threshold),
            without_ttl=len(self.no_ttl),
            oldest_age_seconds=0.0 if oldest == UNKNOWN else max(0.0, now - oldest),
        )

    def current(self, shown: Iterable[str] = ()) -> Current | None:
        """The counts now and which of the `shown` keys (as a pass displayed them) have ended
        since, read together; None while the set is not current."""
        with self.lock:
            if not self._usable():
                return None
            raw = ((key, shown_key(key)) for key in shown)
            ended = frozenset(
                key for key, exact in raw if exact is not None and bounded(exact) not in self.held
            )
            return Current(self._counts(), ended)

    def counters(self) -> EventCounters:
        with self.lock:
            return EventCounters(
                acquisitions=self.acquisitions,
                renewals=self.renewals,
                releases=dict(self.releases),
                received=self.received,
                corrections=self.corrections,
                hold={outcome: hist.freeze() for outcome, hist in self._hold.items()},
                recent=tuple(self._recent),
            )

    # --- keeping `held`, `by_age` and the key sets together (with the lock held) ----------

    def place(self, key: bytes, at: float, acquired: bool) -> bytes | None:
        """Hold `key` since `at` (`acquired`: that is its acquisition, not a first sighting);
        the key as kept, or None when the set is full."""
        known = self.held.get(key)
        if known is not None:
            # The object already kept: one copy of a key, however often it is seen.
            key = self.by_age.remove((known, key))[1]
        elif len(self.held) >= self.limit:
            self.overflow = True
            return None
        self.held[key] = at
        self.by_age.add((at, key))
        if not acquired:
            self.first_seen[key] = None
        elif known is not None:
            self.first_seen.pop(key, None)
        return key

    def replace(self, key: bytes, known: float, at: float, acquired: bool) -> None:
        """`place` a held lock again, unless that changes nothing (most locks, every pass)."""
        if (at, acquired) != (known, key not in self.first_seen):
            self.place(key, at, acquired)

    def drop(self, key: bytes) -> tuple[float, bool, bool] | None:
        """Stop holding `key`; its acquisition time, whether that was its acquisition, and
        whether it had no TTL, if it was held."""
        at = self.held.pop(key, None)
        if at is None:
            return None
        self.by_age.remove((at, key))
        acquired, no_ttl = key not in self.first_seen, key in self.no_ttl
        if not acquired:
            del self.first_seen[key]
        if no_ttl:
            del self.no_ttl[key]
        return at, acquired, no_ttl

    def set_ttl(self, key: bytes, has_ttl: bool) -> None:
        if has_ttl:
            self.no_ttl.pop(key, None)
        elif key not in self.no_ttl and (at := self.held.get(key)) is not None:
            self.no_ttl[self.by_age.find((at, key))[1]] = None  # the key object kept

    # --- what events do (called with the lock held) ---------------------------------------

    def _touch(self, key: bytes) -> None:
        touched = self.touched
        if touched is not None:
            if len(touched) < self.limit:
                touched[hash(key)] = None
            else:
                self.touched_overflow = True

    def written(self, key: bytes, at: float, whole: bool) -> bool:
        """A lock key was written: `whole`, its value SET (which clears its TTL), or else a
        hash field. On a key not held: an acquisition (True), without a TTL until its EXPIRE.
        On a held key a SET is a renewal (redlock extends so); a hash field is not: Redisson
        counts re-entries there and decrements before its DEL."""
        self._touch(key)
        if key in self.held:
            if whole:
                self.renewals += 1
                self.set_ttl(key, has_ttl=False)
            return False
        self.acquisitions += 1
        kept = self.place(key, at, acquired=True)
        if kept is not None:
            self.no_ttl[kept] = None
        return True

    def expire_set(self, key: bytes, renewal: bool) -> None:
        """A TTL was set: a renewal, or the second half of an acquisition just seen."""
        self._touch(key)
        if key in self.held:
            self.renewals += renewal
        else:
            self.place(key, UNKNOWN, acquired=False)  # held before we listened: a pass tells
        self.no_ttl.pop(key, None)

    def persist(self, key: bytes) -> None:
        self._touch(key)
        self.set_ttl(key, has_ttl=False)

    def end(self, key: bytes, outcome: str, at: float) -> None:
        self._touch(key)
        dropped = self.drop(key)
        self.releases[outcome] += 1
        hold = None
        if dropped is not None and dropped[1] and dropped[0] != UNKNOWN:
            hold = max(0.0, at - dropped[0])
            self._hold[outcome].observe(hold)
        if outcome != "released":
            self._recent.append(RecentEnd(display(key, "key"), outcome, hold, at))

    def take(self, key: bytes) -> tuple[float, bool, bool] | None:
        """Remove a lock without counting an end (renamed away); its state, if it was held."""
        self._touch(key)
        return self.drop(key)

    def put(self, key: bytes, state: tuple[float, bool, bool] | None, at: float) -> None:
        """A lock renamed here: it keeps its state; from an unknown source it is new."""
        if state is None:
            self.written(key, at, whole=False)
            return
        self._touch(key)
        acquired_at, acquired, no_ttl = state
        self.place(key, acquired_at, acquired)
        self.set_ttl(key, has_ttl=not no_ttl)
