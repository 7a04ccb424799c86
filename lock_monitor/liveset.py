"""The set of held locks, kept current by keyspace events between passes.

Pure bookkeeping: no Redis and no threads of its own. Subscribers apply events (one
`Stream` per node, in the order the node published them), scrapes read counts, and each
pass reconciles the set with what it read, because a pass is the truth: Pub/Sub drops
whatever is published while a subscriber is away. One lock guards it all.

Times are Redis times (epoch seconds by the Redis clock): an event's arrival is converted
with the offset between Redis' clock and this host's monotonic clock, measured at each pass.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from lock_monitor.locks import display

OUTCOMES = ("released", "expired", "evicted")
# Hold times of locks taken for 30 s: fine below a second, around the TTL, and past it.
HOLD_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0,
)  # fmt: skip
UNKNOWN = math.inf  # acquisition time not known: never stuck, never the oldest
LIVE_LOCKS_LIMIT = 1_000_000  # past this the set stops growing and passes take over
RECENT_ENDS = 10  # evicted and expired locks kept for the status page
RECONCILE_CHUNK = 2000  # locks reconciled per hold of the lock: events are not held up long
KEY_KEPT = 1024  # bytes of a key kept as is; a longer key is kept as its start and a digest


# A lock as a pass read it: raw key, acquisition time (Redis time), has a TTL, and whether
# that time is the holder's own stamp (rather than when it was first seen).
PassLock = tuple[bytes, float, bool, bool]


@dataclass(frozen=True)
class LiveCounts:
    active: int
    stuck: int
    without_ttl: int
    oldest_age_seconds: float


@dataclass(frozen=True)
class RecentEnd:
    key: str  # display form: bounded, never raw bytes
    outcome: str
    hold_seconds: float | None  # None when the acquisition time was not known
    ended_at: float  # Redis time


@dataclass(frozen=True)
class HoldHistogram:
    buckets: tuple[int, ...]  # cumulative counts per HOLD_BUCKETS bound, then +Inf
    total: float

    @property
    def count(self) -> int:
        return self.buckets[-1]


@dataclass(frozen=True)
class EventCounters:
    """The counters since the process started, read in one go for one scrape."""

    acquisitions: int
    renewals: int
    releases: dict[str, int]
    received: int
    corrections: int
    hold: dict[str, HoldHistogram]
    recent: tuple[RecentEnd, ...]


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(HOLD_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(HOLD_BUCKETS, seconds)] += 1
        self.total += seconds

    def freeze(self) -> HoldHistogram:
        cumulative, running = [], 0
        for count in self.counts:
            running += count
            cumulative.append(running)
        return HoldHistogram(tuple(cumulative), self.total)


@dataclass(frozen=True)
class PassMark:
    """What the set looked like when a pass started: the pass may only make the set
    authoritative if no event was lost while it ran."""

    epoch: int
    subscribed: bool
    valid: bool


class Reconciled(NamedTuple):
    corrections: int  # locks the pass found different from the set
    comparable: bool  # the set was current when the pass began: differences are missed events


def bounded(key: bytes) -> bytes:
    """The key as the set keeps it: memory must not follow the size of a hostile key name."""
    if len(key) <= KEY_KEPT:
        return key
    return key[:KEY_KEPT] + hashlib.blake2b(key, digest_size=16).digest()


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
        self.no_ttl: set[bytes] = set()
        # Until a pass measures it, this host's clock stands in for Redis'.
        self.offset = time.time() - clock()
        # Keys that had an event since the current pass started (None between passes):
        # what the pass read of them is older than what the events said.
        self.touched: set[bytes] | None = None
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
        self._hold = {outcome: _Histogram() for outcome in OUTCOMES}
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
        self.verified = verified

    def stream(self, prefix: bytes) -> Stream:
        return Stream(self, prefix)

    # --- reading --------------------------------------------------------------------------

    def usable(self) -> bool:
        """The set is current: every node subscribed, and reconciled since."""
        return self.subscribed and self.verified and self.valid and not self.overflow

    def counts(self) -> LiveCounts:
        """The gauges now: stuck-ness is judged from acquisition times at this moment."""
        with self.lock:
            now = self.redis_now()
            cutoff = now - self.stuck_threshold
            acquired = self.held.values()
            stuck = sum(1 for at in acquired if at < cutoff)
            oldest = min(acquired, default=UNKNOWN)
            return LiveCounts(
                active=len(self.held),
                stuck=stuck,
                without_ttl=len(self.no_ttl),
                oldest_age_seconds=0.0 if oldest == UNKNOWN else max(0.0, now - oldest),
            )

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

    # --- what events do (called with the lock held) ---------------------------------------

    def _touch(self, key: bytes) -> None:
        touched = self.touched
        if touched is not None:
            if len(touched) < self.limit:
                touched.add(key)
            else:
                self.touched_overflow = True

    def _hold_key(self, key: bytes, acquired_at: float) -> None:
        if len(self.held) < self.limit or key in self.held:
            self.held[key] = acquired_at
        else:
            self.overflow = True

    def acquire_or_renew(self, key: bytes, at: float, clears_ttl: bool) -> None:
        self._touch(key)
        if key in self.held:
            self.renewals += 1
        else:
            self.acquisitions += 1
            self._hold_key(key, at)
            clears_ttl = True  # a new key has no TTL until its EXPIRE
        if clears_ttl:
            self.no_ttl.add(key)

    def expire_set(self, key: bytes, renewal: bool) -> None:
        """A TTL was set: a renewal, or the second half of the SET ... PX just seen."""
        self._touch(key)
        if key in self.held:
            self.renewals += renewal
        else:
            self._hold_key(key, UNKNOWN)  # held before we listened: a pass will tell its age
        self.no_ttl.discard(key)

    def persist(self, key: bytes) -> None:
        self._touch(key)
        if key in self.held:
            self.no_ttl.add(key)

    def end(self, key: bytes, outcome: str, at: float) -> None:
        self._touch(key)
        acquired = self.held.pop(key, UNKNOWN)
        self.no_ttl.discard(key)
        self.releases[outcome] += 1
        hold = None if acquired == UNKNOWN else max(0.0, at - acquired)
        if hold is not None:
            self._hold[outcome].observe(hold)
        if outcome != "released":
            self._recent.append(RecentEnd(display(key, "key"), outcome, hold, at))

    def take(self, key: bytes) -> tuple[float, bool] | None:
        """Remove a lock without counting an end (renamed away); its state, if it was held."""
        self._touch(key)
        if key not in self.held:
            return None
        no_ttl = key in self.no_ttl
        self.no_ttl.discard(key)
        return self.held.pop(key), no_ttl

    def put(self, key: bytes, state: tuple[float, bool] | None, at: float) -> None:
        """A lock renamed here: it keeps its state; from an unknown source it is new."""
        self._touch(key)
        if state is None:
            self.acquire_or_renew(key, at, clears_ttl=False)
            return
        self._hold_key(key, state[0])
        if state[1]:
            self.no_ttl.add(key)
        else:
            self.no_ttl.discard(key)

    # --- reconciling with a pass ------------------------------------------------------------

    def begin_pass(self) -> PassMark:
        with self.lock:
            self.touched = set()
            self.touched_overflow = False
            return PassMark(self.epoch, self.subscribed, self.valid)

    def abandon_pass(self) -> None:
        with self.lock:
            self.touched = None

    def reconcile(self, mark: PassMark, locks: Sequence[PassLock]) -> Reconciled:
        """Make the set agree with a complete pass, and count what it corrected.

        `locks`: (raw key, acquisition time in Redis time, has a TTL, time from the holder's
        own stamp). A key with an event since the pass started is left to the events. Until
        a first pass has reconciled the set while subscribed, filling it is not a correction
        (it only learns the locks held before it listened); nor is anything while the server
        is not known to publish events.
        """
        counted = self.seeded
        in_pass: set[bytes] = set()
        corrections = 0
        with self.lock:
            self.overflow = False
        for start in range(0, len(locks), RECONCILE_CHUNK):
            with self.lock:
                corrections += self._reconcile_chunk(
                    locks[start : start + RECONCILE_CHUNK], in_pass
                )
        with self.lock:
            touched = self.touched or set()
            if self.touched_overflow:  # cannot tell what moved during the pass: keep events'
                gone: list[bytes] = []
            else:
                gone = [key for key in self.held if key not in in_pass and key not in touched]
            for key in gone:
                del self.held[key]
                self.no_ttl.discard(key)
            corrections += len(gone)
            self.touched = None
            unbroken = mark.epoch == self.epoch
            if mark.subscribed and unbroken:
                self.valid = self.seeded = True
            if counted and self.verified:
                self.corrections += corrections
            return Reconciled(corrections, mark.valid and unbroken)

    def _reconcile_chunk(self, locks: Iterable[PassLock], in_pass: set[bytes]) -> int:
        corrections = 0
        touched = self.touched or set()
        held, no_ttl = self.held, self.no_ttl
        for raw, acquired_at, has_ttl, stamped in locks:
            key = bounded(raw)
            in_pass.add(key)
            known = held.get(key)
            if key in touched:
                if known == UNKNOWN:  # the events saw it, but not since when
                    held[key] = acquired_at
                continue
            if known is None:
                if self.touched_overflow:
                    continue  # it may have been released during the pass: the next pass knows
                self._hold_key(key, acquired_at)
                corrections += 1
            elif stamped or known == UNKNOWN:
                held[key] = acquired_at  # the holder's own stamp wins over arrival times
            if has_ttl == (key in no_ttl):
                corrections += known is not None
                if has_ttl:
                    no_ttl.discard(key)
                else:
                    no_ttl.add(key)
        return corrections


class Stream:
    """One node's events in the order it published them.

    Order matters: `SET k v PX 30000 NX` publishes `set` then `expire` (one acquisition), a
    RENAME publishes `rename_from` then `rename_to`. Each node gets its own stream, so events
    of two nodes never interleave here.
    """

    def __init__(self, live: LiveSet, prefix: bytes) -> None:
        self.live = live
        self.skip = len(prefix)
        self.received = 0
        self._after_set: bytes | None = None  # the key whose own EXPIRE may come next
        self._renamed: tuple[float, bool] | None = None  # the state of a lock renamed away

    def apply(self, messages: Sequence[Sequence[bytes]]) -> None:
        """Apply a batch of raw replies (`pmessage`, pattern, channel, event); skip others."""
        live = self.live
        at = live.redis_now()
        skip = self.skip
        applied = 0
        with live.lock:
            for message in messages:
                if len(message) == 4 and message[0] == b"pmessage":
                    key = message[2][skip:]
                    self._event(key if len(key) <= KEY_KEPT else bounded(key), message[3], at)
                    applied += 1
            live.received += applied
        self.received += applied

    def _event(self, key: bytes, event: bytes, at: float) -> None:
        live = self.live
        after_set, self._after_set = self._after_set, None
        renamed, self._renamed = self._renamed, None
        if event == b"set":
            live.acquire_or_renew(key, at, clears_ttl=True)
            self._after_set = key
        elif event == b"expire":
            live.expire_set(key, renewal=key != after_set)
        elif event in (b"del", b"unlink"):
            live.end(key, "released", at)
        elif event == b"expired":
            live.end(key, "expired", at)
        elif event == b"evicted":
            live.end(key, "evicted", at)
        elif event in (b"hset", b"hincrby"):
            live.acquire_or_renew(key, at, clears_ttl=False)
            self._after_set = key
        elif event == b"persist":
            live.persist(key)
        elif event == b"rename_from":
            self._renamed = live.take(key)
        elif event == b"rename_to":
            live.put(key, renamed, at)
