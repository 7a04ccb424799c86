"""Reconciling the live set with a pass: a pass is the truth, because Pub/Sub drops whatever
is published while a subscriber is away. Chunk by chunk, so events and scrapes wait for a chunk
at most, never for the whole pass.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from lock_monitor.byage import Entry
from lock_monitor.liveset import UNKNOWN, LiveSet
from lock_monitor.passlocks import PassLock

Shards = list[dict[int, None]]  # fingerprints (`hash`) of keys, by their low bits
SHARDS = 64
SHARD_MASK = SHARDS - 1
RECONCILE_CHUNK = 250  # locks reconciled (or swept) per hold of the lock and of the GIL


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


def _let_others_run() -> None:
    """Between chunks of a pass's work: hand the GIL to a thread waiting for it (a scrape, a
    subscriber). A busy thread otherwise keeps it for the whole switch interval each time the
    other gives it up for a socket read or write, and a scrape makes several of those.
    `sleep(0)` naps for the timer's slack, long enough for a waiting thread to take the GIL."""
    time.sleep(0)


def begin_pass(live: LiveSet) -> PassMark:
    with live.lock:
        live.touched = {}
        live.touched_overflow = False
        return PassMark(live.epoch, live.subscribed, live.valid)


def abandon_pass(live: LiveSet) -> None:
    with live.lock:
        live.touched = None


def reconcile(live: LiveSet, mark: PassMark, locks: Sequence[PassLock]) -> Reconciled:
    """Make the set agree with a complete pass, and count what it corrected.

    `locks`: (key, `bounded` as `PassLocks` keeps it, acquisition time in Redis time, has a
    TTL, time from the holder's own stamp). A key with an event since the pass started is
    left to the events. Until a first pass has reconciled the set while subscribed, filling
    it is not a correction (it only learns the locks held before it listened); nor is
    anything while the server is not known to publish events. Chunk by chunk: events go on
    in between.
    """
    counted = live.seeded
    # The keys read, as fingerprints (no second copy of a key), in shards: growing one
    # dict to a million would copy it all at once, the GIL held, every few doublings.
    in_pass: Shards = [{} for _ in range(SHARDS)]
    corrections = 0
    with live.lock:
        live.overflow = False
    for start in range(0, len(locks), RECONCILE_CHUNK):
        with live.lock:
            corrections += _reconcile_chunk(live, locks[start : start + RECONCILE_CHUNK], in_pass)
        _let_others_run()
    corrections += _sweep(live, in_pass)
    with live.lock:
        live.touched = None
        unbroken = mark.epoch == live.epoch
        if mark.subscribed and unbroken:
            live.valid = live.seeded = True
        if counted and live.verified:
            live.corrections += corrections
        return Reconciled(corrections, mark.valid and unbroken)


def _reconcile_chunk(live: LiveSet, locks: Iterable[PassLock], in_pass: Shards) -> int:
    corrections = 0
    touched = live.touched or {}
    held, no_ttl = live.held, live.no_ttl
    for key, acquired_at, has_ttl, stamped in locks:
        fingerprint = hash(key)
        in_pass[fingerprint & SHARD_MASK][fingerprint] = None
        known = held.get(key)
        if fingerprint in touched:
            if known == UNKNOWN:  # the events saw it, but not since when
                live.place(key, acquired_at, acquired=stamped)
            continue
        if known is None:
            if live.touched_overflow:
                continue  # it may have been released during the pass: the next pass knows
            corrections += 1
            if live.place(key, acquired_at, acquired=stamped) is None:
                continue  # full: the passes' figures are shown until it fits
        elif stamped or known == UNKNOWN:  # the holder's own stamp wins over arrivals
            live.replace(key, known, acquired_at, acquired=stamped)
        if has_ttl == (key in no_ttl):
            corrections += known is not None
            live.set_ttl(key, has_ttl)
    return corrections


def _sweep(live: LiveSet, in_pass: Shards) -> int:
    """Remove the locks the pass did not read (unless events changed them meanwhile),
    oldest first, a chunk per hold of the lock."""
    removed = 0
    after: Entry | None = None
    while True:
        with live.lock:
            if live.touched_overflow:  # cannot tell what moved during the pass: keep all
                return removed
            chunk = live.by_age.after(after, RECONCILE_CHUNK)
            if not chunk:
                return removed
            after = chunk[-1]
            touched = live.touched or {}
            for _, key in chunk:
                fingerprint = hash(key)
                read = fingerprint in in_pass[fingerprint & SHARD_MASK]
                if not read and fingerprint not in touched:
                    live.drop(key)
                    removed += 1
        _let_others_run()
