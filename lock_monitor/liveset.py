"""The set of held locks, kept current by keyspace events between passes.

Pure bookkeeping: no Redis and no threads of its own. Subscribers apply events (one
`Stream` per node, in the order the node published them), scrapes read counts, and each
pass reconciles the set with what it read, because a pass is the truth: Pub/Sub drops
whatever is published while a subscriber is away. One lock guards it all, and nothing
done under it walks every held lock: scrapes read counts kept as the set changes, and a
pass reconciles and sweeps in chunks, so events and scrapes wait for a chunk at most.

Times are Redis times (epoch seconds by the Redis clock): an event's arrival is converted
with the offset between Redis' clock and this host's monotonic clock, measured at each pass.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from bisect import bisect_left, bisect_right, insort
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
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
RECONCILE_CHUNK = 1000  # locks reconciled (or swept) per hold of the lock
KEY_KEPT = 200  # bytes of a key kept as is (as many as are shown); longer: its start and a digest
DIGEST_BYTES = 16
BLOCK = (
    512  # entries per block of `ByAge`: a block is split past twice this, merged below a quarter
)


# A lock as a pass read it: raw key, acquisition time (Redis time), has a TTL, and whether
# that time is the holder's own stamp (rather than when it was first seen).
PassLock = tuple[bytes, float, bool, bool]
# A held lock: (acquisition time, key). The same tuple is the value in `LiveSet.held` and an
# element of its `ByAge`, so the key and the time are kept once.
Entry = tuple[float, bytes]
_time_of = itemgetter(0)


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


@dataclass(frozen=True)
class Current:
    """The live set as one scrape or page reads it, when it is current."""

    counts: LiveCounts
    ended: frozenset[str]  # of the keys asked about (as shown), those the set no longer holds


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
    return key[:KEY_KEPT] + hashlib.blake2b(key, digest_size=DIGEST_BYTES).digest()


def shown_key(shown: str) -> bytes | None:
    """The raw key that `locks.display` showed as `shown`, when the display is exact: not cut,
    no byte escaped (an escape and a backslash in the key itself read alike); None otherwise."""
    if "\\" in shown or shown.endswith("…"):
        return None
    return shown.encode()


class ByAge:
    """Entries kept in order of acquisition time: a sorted list of short sorted blocks.

    Adding or removing a lock is a bisection and a short move within one block; counting the
    locks acquired before a time is a bisection and a sum over block lengths. A heap would
    need lazy deletion, whose garbage grows with the rate of short locks, not their number.
    """

    def __init__(self) -> None:
        self._blocks: list[list[Entry]] = []
        self._lasts: list[Entry] = []  # the last (newest) entry of each block

    def add(self, entry: Entry) -> None:
        blocks, lasts = self._blocks, self._lasts
        if not blocks:
            blocks.append([entry])
            lasts.append(entry)
            return
        i = min(bisect_left(lasts, entry), len(lasts) - 1)
        block = blocks[i]
        insort(block, entry)
        lasts[i] = block[-1]
        if len(block) > 2 * BLOCK:
            blocks[i : i + 1] = [block[:BLOCK], block[BLOCK:]]
            lasts[i : i + 1] = [block[BLOCK - 1], block[-1]]

    def remove(self, entry: Entry) -> None:
        """Remove an entry that was added (and not removed since)."""
        blocks, lasts = self._blocks, self._lasts
        i = bisect_left(lasts, entry)
        block = blocks[i]
        del block[bisect_left(block, entry)]
        if not block:
            del blocks[i], lasts[i]
            return
        lasts[i] = block[-1]
        if len(block) < BLOCK // 4 and len(blocks) > 1:
            i = max(i, 1)  # merge with the block before it (or after, for the first)
            merged = blocks[i - 1] + blocks[i]
            halves = [merged] if len(merged) <= 2 * BLOCK else [merged[:BLOCK], merged[BLOCK:]]
            blocks[i - 1 : i + 1] = halves
            lasts[i - 1 : i + 1] = [half[-1] for half in halves]

    def first(self) -> Entry | None:
        return self._blocks[0][0] if self._blocks else None

    def count_before(self, at: float) -> int:
        """How many entries have a time before `at`."""
        i = bisect_left(self._lasts, at, key=_time_of)
        before = sum(map(len, self._blocks[:i]))
        if i < len(self._blocks):
            before += bisect_left(self._blocks[i], at, key=_time_of)
        return before

    def after(self, entry: Entry | None, limit: int) -> list[Entry]:
        """Up to `limit` entries that come after `entry` (from the first when None), in order:
        a walk that resumes where it stopped however the blocks changed meanwhile."""
        blocks = self._blocks
        i = 0 if entry is None else bisect_right(self._lasts, entry)
        start = 0 if entry is None or i == len(blocks) else bisect_right(blocks[i], entry)
        found: list[Entry] = []
        while i < len(blocks) and len(found) < limit:
            found.extend(blocks[i][start : start + limit - len(found)])
            i, start = i + 1, 0
        return found


class LiveSet:
    """Held locks: key (`bounded`) -> (acquisition time in Redis time or UNKNOWN, key)."""

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
        self.held: dict[bytes, Entry] = {}
        self.by_age = ByAge()
        self.no_ttl: set[bytes] = set()
        # Held locks whose time is when a pass first saw them, not their acquisition: it
        # tells when they become stuck, but their hold time is not known.
        self.first_seen: set[bytes] = set()
        # Until a pass measures it, this host's clock stands in for Redis'.
        self.offset = time.time() - clock()
        # Fingerprints (`hash`) of the keys that had an event since the current pass started
        # (None between passes): what the pass read of them is older than what the events said.
        self.touched: set[int] | None = None
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
        with self.lock:
            self.verified = verified

    def stream(self, prefix: bytes) -> Stream:
        return Stream(self, prefix)

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

    def _place(self, key: bytes, at: float, acquired: bool) -> bytes | None:
        """Hold `key` since `at` (`acquired`: that is its acquisition, not a first sighting);
        the key as kept, or None when the set is full."""
        entry = self.held.get(key)
        if entry is not None:
            self.by_age.remove(entry)
            key = entry[1]  # the object already kept: one copy of a key, however often seen
        elif len(self.held) >= self.limit:
            self.overflow = True
            return None
        entry = (at, key)
        self.held[key] = entry
        self.by_age.add(entry)
        if acquired:
            self.first_seen.discard(key)
        else:
            self.first_seen.add(key)
        return key

    def _replace(self, entry: Entry, at: float, acquired: bool) -> None:
        """`_place` a held lock again, unless that changes nothing (most locks, every pass)."""
        if (at, acquired) != (entry[0], entry[1] not in self.first_seen):
            self._place(entry[1], at, acquired)

    def _drop(self, key: bytes) -> tuple[float, bool, bool] | None:
        """Stop holding `key`; its acquisition time, whether that was its acquisition, and
        whether it had no TTL, if it was held."""
        entry = self.held.pop(key, None)
        if entry is None:
            return None
        self.by_age.remove(entry)
        acquired = key not in self.first_seen
        no_ttl = key in self.no_ttl
        self.first_seen.discard(key)
        self.no_ttl.discard(key)
        return entry[0], acquired, no_ttl

    def _set_ttl(self, key: bytes, has_ttl: bool) -> None:
        kept = self.held.get(key)
        if kept is None:
            return
        if has_ttl:
            self.no_ttl.discard(key)
        else:
            self.no_ttl.add(kept[1])

    # --- what events do (called with the lock held) ---------------------------------------

    def _touch(self, key: bytes) -> None:
        touched = self.touched
        if touched is not None:
            if len(touched) < self.limit:
                touched.add(hash(key))
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
                self._set_ttl(key, has_ttl=False)
            return False
        self.acquisitions += 1
        if self._place(key, at, acquired=True) is not None:
            self._set_ttl(key, has_ttl=False)
        return True

    def expire_set(self, key: bytes, renewal: bool) -> None:
        """A TTL was set: a renewal, or the second half of an acquisition just seen."""
        self._touch(key)
        if key in self.held:
            self.renewals += renewal
        else:
            self._place(key, UNKNOWN, acquired=False)  # held before we listened: a pass tells
        self.no_ttl.discard(key)

    def persist(self, key: bytes) -> None:
        self._touch(key)
        self._set_ttl(key, has_ttl=False)

    def end(self, key: bytes, outcome: str, at: float) -> None:
        self._touch(key)
        dropped = self._drop(key)
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
        return self._drop(key)

    def put(self, key: bytes, state: tuple[float, bool, bool] | None, at: float) -> None:
        """A lock renamed here: it keeps its state; from an unknown source it is new."""
        if state is None:
            self.written(key, at, whole=False)
            return
        self._touch(key)
        acquired_at, acquired, no_ttl = state
        self._place(key, acquired_at, acquired)
        self._set_ttl(key, has_ttl=not no_ttl)

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
        is not known to publish events. Chunk by chunk: events go on in between.
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
        corrections += self._sweep(in_pass)
        with self.lock:
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
            entry = held.get(key)
            if hash(key) in touched:
                if entry is not None and entry[0] == UNKNOWN:  # seen, but not since when
                    self._place(key, acquired_at, acquired=stamped)
                continue
            if entry is None:
                if self.touched_overflow:
                    continue  # it may have been released during the pass: the next pass knows
                corrections += 1
                if self._place(key, acquired_at, acquired=stamped) is None:
                    continue  # full: the passes' figures are shown until it fits
            elif stamped or entry[0] == UNKNOWN:  # the holder's own stamp wins over arrivals
                self._replace(entry, acquired_at, acquired=stamped)
            if has_ttl == (key in no_ttl):
                corrections += entry is not None
                self._set_ttl(key, has_ttl)
        return corrections

    def _sweep(self, in_pass: set[bytes]) -> int:
        """Remove the locks the pass did not read (unless events changed them meanwhile),
        oldest first, a chunk per hold of the lock."""
        removed = 0
        after: Entry | None = None
        while True:
            with self.lock:
                if self.touched_overflow:  # cannot tell what moved during the pass: keep all
                    return removed
                chunk = self.by_age.after(after, RECONCILE_CHUNK)
                if not chunk:
                    return removed
                after = chunk[-1]
                touched = self.touched or set()
                for _, key in chunk:
                    if key not in in_pass and hash(key) not in touched:
                        self._drop(key)
                        removed += 1


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
        self._renamed: tuple[float, bool, bool] | None = None  # a lock renamed away

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
            live.written(key, at, whole=True)
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
            if live.written(key, at, whole=False):
                self._after_set = key
        elif event == b"persist":
            live.persist(key)
        elif event == b"rename_from":
            self._renamed = live.take(key)
        elif event == b"rename_to":
            live.put(key, renamed, at)
