"""What the monitor remembers of locks between passes, and how it classifies a pass's pages.

A pass may see a million locks, so they are classified a page at a time, without an object
per lock: only the few that are shown or logged are built in full (`locks.classify`, the
rule for one lock, which the page loop must agree with). Each live lock is remembered as one
packed int, by a fingerprint of its key, so memory follows the number of live locks, not the
size of their keys or values; and a lock known from the last pass whose TTL still ends when
it did is not read again (`Recall`). Pure: no Redis here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import compress
from operator import not_
from typing import TYPE_CHECKING, NamedTuple, Protocol, cast

from lock_monitor.locks import Lock, classify, parse_timestamp

if TYPE_CHECKING:
    from lock_monitor.passlocks import PassLocks

# Locks are remembered by a fingerprint of their key, never by their bytes; 60 bits keep each
# one a small int object.
_FINGERPRINT_MASK = (1 << 60) - 1
# What is remembered of a lock is packed in one int (one object, 40 bytes), from the top:
# when it started (Redis ms), when its TTL ends (Redis ms), whether its start is in its value,
# and a fingerprint of its value (to tell a renewal from another lock under the same key).
# Ordered by start, so that a pass compares whole entries with a time. Negative (~entry): a
# lock with no TTL or not a string, whose value a pass always reads.
_CHECK_MASK = (1 << 31) - 1
_STAMPED = 1 << 31
_END_SHIFT = 32
_END_MASK = (1 << 44) - 1
_START_SHIFT = 76
# A known lock whose TTL ends when it ended in the last pass, to this many ms, is the lock
# seen then: its value is not read again. The margin covers the time between a round trip's
# TIME and its PTTLs; a lock taken again ends elsewhere (see docs/how-it-works.md).
DEADLINE_TOLERANCE_MS = 100
# The memory of a pass is split by fingerprint into tables this many, each small: a pass
# then grows, and drops, many small tables rather than one large one (whose growth briefly
# needs it twice, and whose release the allocator does not always return).
_SHARD_BITS = 6
_SHARDS = 1 << _SHARD_BITS
_SHARD_SHIFT = 60 - _SHARD_BITS  # the top bits: a dict places entries by the low ones


class Page(Protocol):
    """Locks read from one node in one round trip, as parallel sequences (`scanner.Page`)."""

    @property
    def now(self) -> float: ...  # Redis TIME at the start of the pass on this node
    @property
    def clock(self) -> float: ...  # Redis TIME in the round trip that read the TTLs
    @property
    def keys(self) -> Sequence[bytes]: ...
    @property
    def values(self) -> Sequence[bytes | None] | None: ...  # None: not read (see `Recall`)
    @property
    def remembered(self) -> Sequence[int] | None: ...  # when not read: `Recall.known`
    @property
    def pttls(self) -> Sequence[int]: ...  # -1: no TTL
    @property
    def kinds(self) -> Sequence[str] | None: ...  # None: all strings


# A lock shown in the last pass, as it was built in full: (what was remembered of it, Lock).
Shown = Mapping[int, tuple[int, Lock]]


class Recall:
    """What the tracker remembers of the locks of one node, for the pass reading it: which
    locks need not have their values read again. A lock known from the last pass is read by
    its TTL alone, unless it is to be shown (older than `older_than()`, which only grows
    during a pass) and was not shown in the last pass, or it becomes stuck in this pass (to
    be logged); if its TTL no longer ends when it did, it is read in full after all
    (`unchanged`). A lock shown again is rebuilt from the last pass's: reading its value
    every pass would also keep it from ever looking idle to Redis' LRU eviction."""

    def __init__(
        self,
        remembered: Sequence[Mapping[int, int]],
        stuck_threshold: float,
        previous_now: float,
        older_than: Callable[[], float],
        shown: Shown,
    ) -> None:
        self._remembered, self._older_than, self._shown = remembered, older_than, shown
        self._threshold, self._previous_now = stuck_threshold, previous_now

    def known(self, keys: Sequence[bytes], now: float) -> list[int]:
        """For each key, what is remembered of its lock when its value need not be read,
        else 0."""
        cut = self._older_than()
        stuck, stuck_before = _stuck_bounds(now, self._previous_now, self._threshold)
        if cut == -math.inf:  # every lock is to be shown
            young: float = math.inf
        else:
            young = -1 if cut == math.inf else math.ceil((now - cut) * 1000) << _START_SHIFT
        settled, other = max(young, stuck), max(young, 1)  # not stuck; stuck all along
        remembered, shown = self._remembered, self._shown
        prints = [hash(key) & _FINGERPRINT_MASK for key in keys]
        entries = [remembered[print_ >> _SHARD_SHIFT].get(print_, 0) for print_ in prints]
        known = [e if e >= settled or other <= e < stuck_before else 0 for e in entries]
        if shown:  # to be shown, but shown last time: rebuilt from then
            for i in compress(range(len(known)), map(not_, known)):  # only those left to read
                entry = entries[i]
                as_shown = shown.get(prints[i]) if entry > 0 else None
                if as_shown and as_shown[0] == entry and (entry >= stuck or entry < stuck_before):
                    known[i] = entry
        return known


def unchanged(entries: Sequence[int], pttls: Sequence[int], clock: float) -> list[bool]:
    """For each known lock (`Recall.known`) and its TTL read at `clock` (Redis time): whether
    its TTL still ends when it did, so that it is the same lock, neither renewed nor taken
    again."""
    clock_ms = round(clock * 1000)
    low, high = clock_ms - DEADLINE_TOLERANCE_MS, clock_ms + DEADLINE_TOLERANCE_MS
    ends = [
        (entry >> _END_SHIFT & _END_MASK) - pttl for entry, pttl in zip(entries, pttls, strict=True)
    ]
    if ends and min(pttls) >= 0 and low <= min(ends) and max(ends) <= high:
        return [True] * len(ends)  # as in most passes: one pass over the list in C
    return [pttl >= 0 and low <= end <= high for end, pttl in zip(ends, pttls, strict=True)]


def _stuck_bounds(now: float, previous_now: float, threshold: float) -> tuple[int, int]:
    """Remembered locks below the first bound are stuck now, below the second they were
    stuck in the last pass too (whole entries compared, see _START_SHIFT)."""
    threshold_ms = round(threshold * 1000)
    stuck = round(now * 1000) - threshold_ms << _START_SHIFT
    if previous_now == -math.inf:
        return stuck, -1
    return stuck, round(previous_now * 1000) - threshold_ms << _START_SHIFT


class PageVerdict(NamedTuple):
    """What one page adds to a pass: counts, and in full only the locks asked for."""

    active: int
    stuck: int
    still_stuck: int  # stuck in the previous pass too
    without_ttl: int
    first_seen: int  # aged from their first sighting: no timestamp in the value
    older: list[Lock]  # every lock older than the age asked for
    newly_stuck: list[tuple[int, float, Lock]]  # (fingerprint, start, lock): the first few
    newly_stuck_count: int


class LockTracker:
    """Classifies the pages of successive passes and remembers when each lock started.

    It remembers each live lock by a fingerprint of its key, for this pass and the last: a
    fingerprint of its value, when it started (from the timestamp in its value, else when it
    was first seen holding that value) and when its TTL ends. That dates locks without a
    timestamp, finds the locks that were stuck in the previous pass, drops a lock SCAN
    returns twice, and lets a pass skip reading the value of a lock it knows (`recall`).
    `finish_pass` forgets the locks not seen, so memory follows the number of live locks,
    not the history of all locks ever seen, nor the size of their keys or values.
    """

    def __init__(self, stuck_threshold: float, remember: bool = True) -> None:
        """`remember=False`: one pass, with no next one to date locks for."""
        self.stuck_threshold = stuck_threshold
        self._remember = remember
        # Fingerprint of the key -> the packed lock, in the shard its fingerprint names.
        self._previous: list[dict[int, int]] = _shards()
        self._current: list[dict[int, int]] | list[_Seen] = self._fresh()
        self._previous_now: dict[str, float] = {}  # node -> Redis time of the last pass
        self._current_now: dict[str, float] = {}
        # Fingerprints new in this pass, to forget if it fails; None when nothing is
        # remembered from before (a failed pass then forgets everything it saw).
        self._first_sighted: list[int] | None = None
        # The locks built in full in the last pass and in this one: the next may rebuild them.
        self._shown: dict[int, tuple[int, Lock]] = {}
        self._built: dict[int, tuple[int, Lock]] = {}
        # Remembered from before a server restarted: gone, but told as gone only when a pass
        # completes (a lock that was stuck is then logged as cleared).
        self._lost: list[dict[int, int]] = _shards()
        self._run_ids: dict[str, str] = {}  # node -> the run_id of its server, where INFO tells

    def _fresh(self) -> list[dict[int, int]] | list[_Seen]:
        return _shards() if self._remember else [_Seen() for _ in range(_SHARDS)]

    def _starts(self, shards: list[dict[int, int]] | list[_Seen]) -> list[dict[int, int]]:
        """The locks of a pass, if they are remembered; else none."""
        return cast("list[dict[int, int]]", shards) if self._remember else _shards()

    @property
    def remembered(self) -> int:
        """The locks remembered from the last completed pass."""
        return sum(map(len, self._previous))

    def recall(self, node: str, older_than: Callable[[], float]) -> Recall | None:
        """What the reader of `node` may skip; None when nothing is remembered."""
        if not self._remember:
            return None
        previous_now = self._previous_now.get(node, -math.inf)
        shown = self._shown
        return Recall(self._previous, self.stuck_threshold, previous_now, older_than, shown)

    def add_page(
        self,
        page: Page,
        node: str,
        older_than: float = math.inf,
        newly_stuck_wanted: int = 0,
        held: PassLocks | None = None,
    ) -> PageVerdict:
        """Classify a page from `node`: counts for all its locks, and in full the locks older
        than `older_than` and the first `newly_stuck_wanted` that became stuck. `held`, when
        given, receives each lock as (key, when taken, has a TTL, dated by its value)."""
        self._current_now[node] = page.now
        previous_now = self._previous_now.get(node, -math.inf)
        if page.values is None:
            return self._add_known(page, previous_now, older_than, held)
        now, threshold, remember = page.now, self.stuck_threshold, self._remember
        clock_ms = round(page.clock * 1000)
        currents, previous = self._current, self._previous
        sighted = ([] if self._first_sighted is None else self._first_sighted).append
        values = page.values
        stamps: Iterable[float | None] = [None] * len(values)
        strings = page.kinds is None
        if strings:  # no value is None
            stamps = map(parse_timestamp, cast("Sequence[bytes]", values))
        repeated: list[int] = []
        older: list[tuple[int, float, int]] = []  # (index, start, fingerprint)
        newly: list[tuple[int, float, int]] = []  # (index, start, fingerprint)
        stuck = still = newly_count = sighting_aged = 0
        held_keys: list[bytes] = []  # the columns of `held`
        held_times: list[float] = []
        held_ttls: list[bool] = []
        held_stamped: list[bool] = []
        columns = zip(page.keys, values, stamps, page.pttls, strict=True)
        for index, (key, value, stamp, pttl) in enumerate(columns):
            print_ = hash(key) & _FINGERPRINT_MASK
            shard = print_ >> _SHARD_SHIFT
            current = currents[shard]
            if print_ in current:
                repeated.append(index)  # SCAN returned it twice
                continue
            entry = previous[shard].get(print_, -1)
            entry = entry if entry >= 0 else ~entry  # 0 when not remembered
            check = hash(value) & _CHECK_MASK
            seen = entry > 0 and entry & _CHECK_MASK == check
            if seen:  # else the lock remembered under this key, if any, is gone: left behind
                del previous[shard][print_]
            else:
                sighted(print_)
            if stamp is not None:
                start = stamp
            else:
                start = (entry >> _START_SHIFT) / 1000 if seen else now
                sighting_aged += 1
            if remember:
                end = clock_ms + pttl if strings and pttl >= 0 else None
                current[print_] = _pack(start, stamp is not None, check, end)
            else:
                current[print_] = 0
            age = now - start
            if age > threshold:
                stuck += 1
                if seen and previous_now - start > threshold:
                    still += 1
                else:
                    newly_count += 1
                    if len(newly) < newly_stuck_wanted:
                        newly.append((index, start, print_))
            if age > older_than:
                older.append((index, start, print_))
            if held is not None:
                held_keys.append(key)
                held_times.append(start if age > 0 else now)  # a stamp ahead of Redis: now
                held_ttls.append(pttl >= 0)
                held_stamped.append(stamp is not None)
        if held is not None:
            held.extend(held_keys, held_times, held_ttls, held_stamped)
        pttls = page.pttls
        return PageVerdict(
            active=len(values) - len(repeated),
            stuck=stuck,
            still_stuck=still,
            without_ttl=pttls.count(-1) - [pttls[index] for index in repeated].count(-1),
            first_seen=sighting_aged,
            older=[self._built_lock(page, index, start, print_) for index, start, print_ in older],
            newly_stuck=[(fp, start, self._lock(page, index, start)) for index, start, fp in newly],
            newly_stuck_count=newly_count,
        )

    def _add_known(
        self, page: Page, previous_now: float, older_than: float, held: PassLocks | None
    ) -> PageVerdict:
        """A page of locks known and unchanged since the last pass, as remembered; those to
        be shown were shown in the last pass, and are rebuilt from it (`Recall`)."""
        currents, previous = self._current, self._previous
        keys, entries = page.keys, cast("Sequence[int]", page.remembered)
        pttls = page.pttls
        repeated: list[int] = []
        for index, (key, entry) in enumerate(zip(keys, entries, strict=True)):
            print_ = hash(key) & _FINGERPRINT_MASK
            shard = print_ >> _SHARD_SHIFT
            current = currents[shard]
            if print_ in current:
                repeated.append(index)  # SCAN returned it twice
                continue
            del previous[shard][print_]
            current[print_] = entry
        if repeated:
            kept = [True] * len(keys)
            for index in repeated:
                kept[index] = False
            keys, entries = list(compress(keys, kept)), list(compress(entries, kept))
            pttls = list(compress(pttls, kept))
        stuck_bound, before_bound = _stuck_bounds(page.now, previous_now, self.stuck_threshold)
        stuck, still = sum(map(stuck_bound.__gt__, entries)), sum(map(before_bound.__gt__, entries))
        stamped = sum(map(_STAMPED.__and__, entries)) // _STAMPED
        if held is not None:
            now = page.now
            starts = [(entry >> _START_SHIFT) / 1000 for entry in entries]
            taken = [start if now > start else now for start in starts]
            stamps = [bool(entry & _STAMPED) for entry in entries]
            held.extend(keys, taken, [True] * len(keys), stamps)
        return PageVerdict(
            active=len(keys),
            stuck=stuck,
            still_stuck=still,
            without_ttl=0,
            first_seen=len(keys) - stamped,
            older=self._rebuilt(page.now, keys, entries, pttls, older_than),
            newly_stuck=[],
            newly_stuck_count=stuck - still,
        )

    def _built_lock(self, page: Page, index: int, start: float, print_: int) -> Lock:
        """A lock to be shown, built from what was read; remembered, to be rebuilt next time."""
        lock = self._lock(page, index, start)
        if not self._remember:
            return lock
        entry = cast("list[dict[int, int]]", self._current)[print_ >> _SHARD_SHIFT][print_]
        if entry > 0:  # a string with a TTL: the kind of lock a pass may leave unread
            self._built[print_] = (entry, lock)
        return lock

    def _rebuilt(
        self,
        now: float,
        keys: Sequence[bytes],
        entries: Sequence[int],
        pttls: Sequence[int],
        older_than: float,
    ) -> list[Lock]:
        """The known locks older than `older_than`, as shown last time with today's TTL and
        age (`Recall` let only such locks go unread)."""
        if older_than == math.inf:
            return []
        if older_than != -math.inf:  # most pages: none is, as a comparison of ints tells
            bound = math.ceil((now - older_than) * 1000) + 1 << _START_SHIFT
            if not any(map(bound.__gt__, entries)):
                return []
        rebuilt = []
        for key, entry, pttl in zip(keys, entries, pttls, strict=True):
            start = (entry >> _START_SHIFT) / 1000
            age = max(0.0, now - start)
            if age <= older_than:
                continue
            print_ = hash(key) & _FINGERPRINT_MASK
            as_shown = self._shown.get(print_)
            if as_shown is None:  # not to be shown when it was left unread: `Recall`
                continue
            lock = as_shown[1]._replace(
                ttl_seconds=pttl / 1000.0, age_seconds=age, stuck=age > self.stuck_threshold
            )
            self._built[print_] = (entry, lock)
            rebuilt.append(lock)
        return rebuilt

    def _lock(self, page: Page, index: int, start: float) -> Lock:
        kind = "string" if page.kinds is None else page.kinds[index]
        return classify(
            page.keys[index],
            None if page.values is None else page.values[index],
            kind,
            page.pttls[index],
            page.now,
            start,
            self.stuck_threshold,
        )

    def server_started(self, node: str, run_id: str | None) -> None:
        """Before reading `node`: when its server is not the one read last time (a restart, with
        a new run_id), its keys were all created again, and a key holding the same value as
        before is a new lock. The first sightings are forgotten: ages count afresh (a lock
        whose value holds its start keeps it)."""
        if run_id is None:
            return
        if self._run_ids.get(node, run_id) != run_id:
            for previous, lost in zip(self._previous, self._lost, strict=True):
                told = [print_ for print_, entry in previous.items() if not _stamped(entry)]
                for print_ in told:
                    lost[print_] = previous.pop(print_)
        self._run_ids[node] = run_id

    def finish_pass(self) -> Vanished:
        """Forget the locks not seen in the pass just completed, and say which they were."""
        for previous, lost in zip(self._previous, self._lost, strict=True):
            previous.update(lost)
        self._lost = _shards()
        vanished = Vanished(self._previous, self._previous_now)
        current, self._current = self._current, self._fresh()
        self._previous = self._starts(current)
        self._previous_now, self._current_now = self._current_now, {}
        self._shown, self._built = self._built, {}
        self._first_sighted = [] if self.remembered else None
        return vanished

    def abandon_pass(self) -> None:
        """A failed pass saw only part of the keys: remember what the last pass left, as if
        this one had not run (a lock on a node that failed must not look released)."""
        current = self._starts(self._current)
        self._current, self._built = self._fresh(), {}
        if self._first_sighted is not None:
            for print_ in self._first_sighted:
                del current[print_ >> _SHARD_SHIFT][print_]
            for previous, moved in zip(self._previous, current, strict=True):
                previous.update(moved)
            self._first_sighted = []
        self._current_now = {}


def _pack(start: float, stamped: bool, check: int, end_ms: int | None) -> int:
    """What is remembered of a lock (see _START_SHIFT); `end_ms`: when its TTL ends, for a
    string lock that has one, the only kind whose value a pass may skip."""
    entry = round(start * 1000) << _START_SHIFT | stamped * _STAMPED | check
    return entry | end_ms << _END_SHIFT if end_ms is not None and end_ms <= _END_MASK else ~entry


def _stamped(entry: int) -> bool:
    return bool((entry if entry >= 0 else ~entry) & _STAMPED)


class _Seen(set[int]):
    """The fingerprints of a pass without their start times: all a pass with no next one
    needs, in less memory than a dict."""

    def __setitem__(self, fingerprint: int, entry: int) -> None:
        self.add(fingerprint)


def _shards() -> list[dict[int, int]]:
    return [{} for _ in range(_SHARDS)]


@dataclass(frozen=True)
class Vanished:
    """Locks of the last pass that the pass just completed did not see: released."""

    shards: Sequence[Mapping[int, int]]  # their fingerprints, sharded as the tracker's
    now: Mapping[str, float]  # node -> Redis time of the pass they were last seen in

    def __contains__(self, fingerprint: int) -> bool:
        return fingerprint in self.shards[fingerprint >> _SHARD_SHIFT]

    def __len__(self) -> int:
        return sum(map(len, self.shards))
