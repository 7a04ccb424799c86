"""Reading the locks of one Redis node: SCAN pages, and the reads of each page's keys.

SCAN is a chain of round trips, each call needing the cursor of the last: it runs on a
connection of its own while the reads of the pages it returned go on another, so Redis
always has work queued and reading the locks adds little to the SCAN itself.

Values are read with GETRANGE, never whole: a lock holding 50 MB costs the same as any
other, here and in Redis' output buffer. A lock known from the last pass whose TTL still
ends when it did costs only a PTTL: its value is not read again (`tracker.Recall`). Nothing
here blocks Redis: SCAN with a bounded COUNT, GETRANGE, PTTL, TYPE, TIME and one EXISTS
of two keys only.
"""

from __future__ import annotations

import select
from collections import deque
from collections.abc import Iterator, Sequence
from itertools import compress
from operator import not_
from typing import Any, NamedTuple

import redis
from redis.crc import key_slot

from lock_monitor.deadline import PassBudget
from lock_monitor.locks import VALUE_PREFIX
from lock_monitor.tracker import Recall, unchanged
from lock_monitor.wire import bulk, held_connection, per_key, plain, raise_errors, receive

# A PTTL of -2 means the key went away between SCAN and the read: released, not a lock.
_GONE = -2


class Page(NamedTuple):
    """Locks of one node read in one round trip, as parallel lists (no object per lock)."""

    now: float  # Redis TIME at the start of the pass on this node
    clock: float  # Redis TIME in the round trip that read the TTLs
    keys: Sequence[bytes]
    # The first VALUE_PREFIX bytes; None when not a string. None for the whole page: locks
    # known and unchanged, whose values were not read.
    values: Sequence[bytes | None] | None
    pttls: Sequence[int]  # -1: no TTL
    kinds: Sequence[str] | None  # the Redis types; None: all strings
    released: int  # keys of the page gone before they were read
    remembered: Sequence[int] | None = None  # when the values were not read: `Recall.known`


class _Reads:
    """The reads of one page, sent in one write on the reading connection: Redis' clock, then
    GETRANGE and PTTL key by key for the keys read in full, PTTL alone for the known ones,
    and TYPE for the locks GETRANGE refused."""

    def __init__(
        self,
        connection: Any,
        keys: Sequence[bytes],
        known: tuple[Sequence[bytes], Sequence[int]],
        untyped: Sequence[tuple[bytes, int]],
        probe: Sequence[bytes] = (),
    ) -> None:
        """`keys` are read in full; `known`, keys with what is remembered of their locks,
        only by their TTL; `untyped`, (key, PTTL), by their TYPE. `probe`: two keys for one
        EXISTS, which a Cluster node refuses."""
        self.connection = connection
        self.keys, self.known, self.untyped, self.probe = keys, known, untyped, bool(probe)
        head: list[tuple[Any, ...]] = [("EXISTS", *probe)] if probe else []
        connection.send_packed_command(
            [
                *connection.pack_commands([*head, ("TIME",)]),
                per_key(bulk(keys), (b"GETRANGE", b"0", b"%d" % (VALUE_PREFIX - 1)), (b"PTTL",)),
                per_key(bulk(known[0]), (b"PTTL",)),
                *(
                    connection.pack_commands([("TYPE", key) for key, _ in untyped])
                    if untyped
                    else []
                ),
            ]
        )

    def read(self, now: float) -> tuple[list[Page], list[tuple[bytes, int]], list[bytes]]:
        """The pages read (strings, known locks, then the locks just typed), the keys to type
        next, and the known keys whose TTL changed, to read in full next."""
        keys, count, known = self.keys, len(self.keys), len(self.known[0])
        replies = receive(self.connection, self.probe + 1 + 2 * count + known + len(self.untyped))
        raise_errors(replies[: self.probe + 1])
        clock = _seconds(replies[self.probe])
        del replies[: self.probe + 1]
        values, pttls = replies[: 2 * count : 2], replies[1 : 2 * count : 2]
        known_pttls, types = replies[2 * count : 2 * count + known], replies[2 * count + known :]
        for checked in (pttls, known_pttls, types):
            raise_errors(checked)
        untyped: list[tuple[bytes, int]] = []
        if _GONE in pttls or not plain(values):
            held = [i for i, pttl in enumerate(pttls) if pttl != _GONE]
            untyped = [(keys[i], pttls[i]) for i in held if _not_a_string(values[i])]
            strings = [i for i in held if type(values[i]) is bytes]
            keys, values, pttls = ([column[i] for i in strings] for column in (keys, values, pttls))
        pages = [Page(now, clock, keys, values, pttls, None, count - len(keys) - len(untyped))]
        changed: list[bytes] = []
        if known:
            page, changed = _known_page(now, clock, *self.known, known_pttls)
            pages.append(page)
        if self.untyped:
            pages.append(_typed_page(now, clock, self.untyped, types))
        return [page for page in pages if page.keys or page.released], untyped, changed


def _seconds(time_reply: Sequence[bytes]) -> float:
    """Redis' TIME reply in seconds."""
    seconds, micros = time_reply
    return int(seconds) + int(micros) / 1_000_000


def _not_a_string(value: Any) -> bool:
    """GETRANGE refused a key that is not a string: it gets a TYPE next. Any other error
    (a NOPERM, say) fails the pass."""
    if isinstance(value, Exception):
        if not str(value).startswith("WRONGTYPE"):
            raise value
        return True
    return False


def read_pages(
    client: redis.Redis,
    pattern: str,
    count: int,
    cluster: bool = False,
    budget: PassBudget | None = None,
    recall: Recall | None = None,
) -> Iterator[Page]:
    """Yield the locks on `client` matching `pattern`, a page at a time.

    SCAN may return a key twice; a page may hold a key seen before, which the reader of
    the pages drops. GETRANGE refuses keys that are not strings; those get a TYPE in a
    later round trip and come in a page of their own. `cluster`: `client` is one node of a
    Redis Cluster; when it is not, one EXISTS across two hash slots makes sure it is not a
    Cluster node either, which would answer only for its own share of the keys. `budget`:
    the pass's limits. `recall`: what is known of the locks from the last pass, whose
    values need not be read again while their TTLs end when they did.
    """
    with held_connection(client, budget) as scanning, held_connection(client, budget) as reading:
        yield from _read_pages(scanning, reading, pattern, count, not cluster, budget, recall)


def _read_pages(
    scanning: Any,
    reading: Any,
    pattern: str,
    count: int,
    probe: bool,
    budget: PassBudget | None,
    recall: Recall | None,
) -> Iterator[Page]:
    """The page reader. SCAN is a chain (each call needs the cursor the last one returned),
    so it runs alone on its own connection, the next call sent the moment a reply is in,
    while the reads of the pages it returned go on the other connection: Redis always has
    work queued, and reading the locks adds little to the time of the SCAN itself. Pages
    are handed over while Redis works, so classifying them costs no wall time either. The
    first SCAN comes with Redis' clock, the reference for ages; the reads of each page come
    with the clock that dates their TTLs. The pass's deadline is checked before each write.
    """
    chain = _Chain(scanning, pattern, count, budget)
    waiting: deque[list[bytes]] = deque()  # pages whose reads are not sent yet
    in_flight: deque[_Reads] = deque()
    untyped: list[tuple[bytes, int]] = []  # non-string locks waiting for their TYPE
    changed: list[bytes] = []  # known locks whose TTL changed, waiting for their value
    while chain.active or waiting or in_flight or untyped or changed:
        scan_next = chain.active and len(waiting) < _PAGES_AHEAD
        if scan_next and chain.connection.can_read(0):
            keys = chain.page()
            if keys:
                waiting.append(keys)
        elif (waiting or untyped or changed) and len(in_flight) < _READS_IN_FLIGHT:
            keys = waiting.popleft() if waiting else []
            pair = _two_slots(keys) if probe else ()
            probe = probe and not pair
            known = recall.known(keys, chain.now) if recall else []
            fresh = list(compress(keys, map(not_, known))) if known else keys
            remembered = (list(compress(keys, known)), list(compress(known, known)))
            if budget:
                budget.check()
            in_flight.append(_Reads(reading, [*fresh, *changed], remembered, untyped, pair))
            untyped, changed = [], []
        elif in_flight and (not scan_next or reading.can_read(0)):
            pages, more_untyped, more_changed = in_flight.popleft().read(chain.now)
            untyped += more_untyped
            changed += more_changed
            yield from pages  # classified while Redis works on what was sent
        else:
            _wait([chain.connection, *([reading] if in_flight else [])])


# Pages SCAN may return ahead of their reads: the reads of a first pass, which reads every
# value, are slower than the SCAN; this bounds the keys held meanwhile.
_PAGES_AHEAD = 4
_READS_IN_FLIGHT = 2


class _Chain:
    """The SCAN of one node on a connection of its own, one call in flight at a time."""

    def __init__(self, connection: Any, pattern: str, count: int, budget: PassBudget | None):
        self.connection, self.pattern, self.count, self.budget = connection, pattern, count, budget
        self._send(0, clock=True)
        self.now = _seconds(receive(connection, 1)[0])
        self.active = True

    def _send(self, cursor: int, clock: bool = False) -> None:
        if self.budget:
            self.budget.check()
        commands: list[tuple[Any, ...]] = [("TIME",)] if clock else []
        commands.append(("SCAN", cursor, "MATCH", self.pattern, "COUNT", self.count))
        self.connection.send_packed_command(self.connection.pack_commands(commands))

    def page(self) -> list[bytes]:
        """The page SCAN returned; the next call is sent before this returns."""
        cursor, keys = receive(self.connection, 1)[0]
        if self.budget:
            self.budget.count_page(len(keys))
        if int(cursor):
            self._send(int(cursor))
        else:
            self.active = False
        return list(keys)


def _wait(connections: Sequence[Any]) -> None:
    """Until one of `connections` has a reply to read, or its socket timeout (when set)."""
    timeout = max((c.socket_timeout or 0 for c in connections), default=0) or None
    ready, _, _ = select.select([c._sock for c in connections], [], [], timeout)
    if not ready:
        raise redis.TimeoutError("Timeout reading from socket")


def _two_slots(keys: Sequence[bytes]) -> tuple[bytes, ...]:
    """Two keys in different hash slots, if the page has them: a Cluster node refuses a
    command across slots with CROSSSLOT."""
    slot = key_slot(keys[0]) if keys else None
    other = next((key for key in keys if key_slot(key) != slot), None)
    return () if other is None else (keys[0], other)


def _known_page(
    now: float, clock: float, keys: Sequence[bytes], known: Sequence[int], pttls: Sequence[int]
) -> tuple[Page, list[bytes]]:
    """The known locks whose TTL ends when it did, in a page without values; and the keys of
    those whose TTL changed (renewed, or taken again), to read in full."""
    same = unchanged(known, pttls, clock)
    changed = [  # not those released since the last pass: gone, neither held nor changed
        key for key, pttl, kept in zip(keys, pttls, same, strict=True) if not kept and pttl != _GONE
    ]
    held_keys, held_pttls = list(compress(keys, same)), list(compress(pttls, same))
    released = len(keys) - len(held_keys) - len(changed)
    page = Page(
        now, clock, held_keys, None, held_pttls, None, released, list(compress(known, same))
    )
    return page, changed


def _typed_page(
    now: float, clock: float, untyped: Sequence[tuple[bytes, int]], types: Sequence[bytes]
) -> Page:
    kinds = [kind.decode() for kind in types]
    held = [(key, pttl, kind) for (key, pttl), kind in zip(untyped, kinds, strict=True)]
    held = [lock for lock in held if lock[2] != "none"]
    return Page(
        now,
        clock,
        [key for key, _, _ in held],
        [None] * len(held),
        [pttl for _, pttl, _ in held],
        [kind for _, _, kind in held],
        len(untyped) - len(held),
    )
