"""Reading the locks of one Redis node: SCAN pages, each followed by one round trip of reads.

The cost of a pass is dominated by round trips (one SCAN call per page), so the reads for
one page travel in the same round trip as the SCAN for the next page: a pass costs as many
round trips as a bare SCAN, plus one. Each round trip is packed, sent and read on one
connection held for the pass, without redis-py's pipeline layer, and the commands that
repeat for every key are packed and their replies read in bulk: redis-py's per-command
bookkeeping costs more than the wire (see docs/performance.md).

Values are read with GETRANGE, never whole: a lock holding 50 MB costs the same as any
other, here and in Redis' output buffer. Nothing here blocks Redis: SCAN with a bounded
COUNT, GETRANGE, PTTL, TYPE and one EXISTS of two keys only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Any, NamedTuple

import redis
from redis._parsers.helpers import parse_info
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.crc import key_slot
from redis.exceptions import ResponseError

from lock_monitor.deadline import PassBudget
from lock_monitor.locks import VALUE_PREFIX

# A PTTL of -2 means the key went away between SCAN and the read: released, not a lock.
_GONE = -2
_PLAIN_REPLIES = {bytes, int, list}
# Every command a pass sends: Redis' time in them is what pacing counts (see server_reading).
PASS_COMMANDS = ("scan", "getrange", "pttl", "type", "exists", "time")


class Page(NamedTuple):
    """Locks of one node read in one round trip, as parallel lists (no object per lock)."""

    now: float  # Redis TIME at the start of the pass on this node
    keys: Sequence[bytes]
    values: Sequence[bytes | None]  # the first VALUE_PREFIX bytes; None when not a string
    pttls: Sequence[int]  # -1: no TTL
    kinds: Sequence[str] | None  # the Redis types; None: all strings
    released: int  # keys of the page gone before they were read


def _bulk(arguments: Sequence[bytes]) -> list[bytes]:
    """Arguments as RESP bulk strings."""
    return [b"$%d\r\n%s\r\n" % (len(argument), argument) for argument in arguments]


def _per_key(name: bytes, keys: list[bytes], *tail: bytes) -> bytes:
    """`name key *tail` for each of the `keys` (bulk strings), packed at once: the same bytes
    redis-py would write, without its per-argument Python work."""
    head = b"*%d\r\n$%d\r\n%s\r\n" % (2 + len(tail), len(name), name)
    rest = b"".join(_bulk(tail))
    return head + (rest + head).join(keys) + rest if keys else b""


class _RoundTrip:
    """One round trip: a SCAN page (with Redis' clock on the first), and the reads of the
    page before; sent in one write on the pass's connection.

    Its replies are read in two steps: the SCAN reply first, so that the next round trip
    can be sent while Redis still works on these reads, and then the reads.
    """

    def __init__(
        self,
        connection: Any,
        scan: tuple[Any, ...] | None,
        keys: Sequence[bytes],
        untyped: Sequence[tuple[bytes, int]],
        clock: bool = False,
        probe: Sequence[bytes] = (),
    ) -> None:
        self.connection = connection
        self.keys, self.untyped = keys, untyped
        head: list[tuple[Any, ...]] = [("EXISTS", *probe)] if probe else []
        head += [("TIME",)] if clock else []
        head += [scan] if scan else []
        self.probe, self.clock, self.scan = bool(probe), clock, scan is not None
        self.head = len(head)
        bulk = _bulk(keys)
        self.packed = [
            *(connection.pack_commands(head) if head else []),
            _per_key(b"GETRANGE", bulk, b"0", b"%d" % (VALUE_PREFIX - 1)),
            _per_key(b"PTTL", bulk),
            *(connection.pack_commands([("TYPE", key) for key, _ in untyped]) if untyped else []),
        ]
        self.connection.send_packed_command(self.packed)

    def read_head(self) -> tuple[float | None, int | None, list[bytes]]:
        """(Redis' clock, if asked, the next cursor, None after the last page, the page)."""
        replies = _receive(self.connection, self.head)
        _raise_errors(replies)
        del replies[: self.probe]  # EXISTS answered: not a Cluster node
        now = None
        if self.clock:
            seconds, micros = replies.pop(0)
            now = int(seconds) + int(micros) / 1_000_000
        if not self.scan:
            return now, None, []
        cursor, keys = replies[0]
        return now, int(cursor) or None, keys

    def read_reads(self, now: float) -> tuple[list[Page], list[tuple[bytes, int]]]:
        """The pages read (strings, then the locks just typed), and the keys to type next."""
        keys, count = self.keys, len(self.keys)
        replies = _receive(self.connection, 2 * count + len(self.untyped))
        values, pttls, types = replies[:count], replies[count : 2 * count], replies[2 * count :]
        _raise_errors(pttls)
        _raise_errors(types)
        untyped: list[tuple[bytes, int]] = []
        if _GONE in pttls or not _plain(values):
            held = [i for i, pttl in enumerate(pttls) if pttl != _GONE]
            untyped = [(keys[i], pttls[i]) for i in held if _not_a_string(values[i])]
            strings = [i for i in held if type(values[i]) is bytes]
            keys, values, pttls = ([column[i] for i in strings] for column in (keys, values, pttls))
        pages = [Page(now, keys, values, pttls, None, count - len(keys) - len(untyped))]
        if self.untyped:
            pages.append(_typed_page(now, self.untyped, types))
        return [page for page in pages if page.keys or page.released], untyped


def _receive(connection: Any, count: int) -> list[Any]:
    """`count` replies, in order; error replies are returned, not raised.

    The first reply of each batch is read by redis-py (socket, timeouts, errors); the ones
    already buffered are then taken straight from its parser, a batch at a time.
    """
    replies: list[Any] = []
    reader = connection._parser._reader
    while len(replies) < count:
        try:
            replies.append(connection.read_response())
        except ResponseError as error:
            replies.append(error)
        replies.extend(islice(iter(reader.gets, NOT_ENOUGH_DATA), count - len(replies)))
    return replies


def _plain(replies: Sequence[Any]) -> bool:
    """No error among `replies` (one C-level pass; errors are rare)."""
    return set(map(type, replies)) <= _PLAIN_REPLIES


def _raise_errors(replies: Sequence[Any]) -> None:
    if not _plain(replies):
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply


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
) -> Iterator[Page]:
    """Yield the locks on `client` matching `pattern`, a page at a time.

    SCAN may return a key twice; a page may hold a key seen before, which the reader of
    the pages drops. GETRANGE refuses keys that are not strings; those get a TYPE in a
    later round trip and come in a page of their own. `cluster`: `client` is one node of a
    Redis Cluster; when it is not, one EXISTS across two hash slots makes sure it is not a
    Cluster node either, which would answer only for its own share of the keys. `budget`:
    the pass's limits.
    """
    with held_connection(client, budget) as connection:
        yield from _read_pages(connection, pattern, count, not cluster, budget)


@contextlib.contextmanager
def held_connection(client: redis.Redis, budget: PassBudget | None) -> Iterator[Any]:
    """One connection of `client`'s pool for a run of round trips, hung up on at the pass's
    deadline, and never reused after an error: replies may be left unread on it."""
    pool = client.connection_pool
    connection: Any = pool.get_connection()
    try:
        with budget.watching(connection._sock) if budget else contextlib.nullcontext():
            yield connection
    except BaseException:
        connection.disconnect()
        raise
    finally:
        pool.release(connection)


class ServerReading(NamedTuple):
    """What INFO says about a server around a pass; None where the ACL refuses INFO."""

    run_id: str | None  # new each time the server starts: what was first seen before is gone
    command_seconds: float | None  # Redis' own time so far in the commands a pass sends


def server_reading(client: redis.Redis, budget: PassBudget | None = None) -> ServerReading:
    """INFO server and INFO commandstats, in one round trip. The command counters are
    server-wide: other clients' SCANs count too, so a difference of two readings errs high,
    never low."""
    with held_connection(client, budget) as connection:
        if budget:
            budget.check()
        connection.send_packed_command(
            connection.pack_commands([("INFO", "server"), ("INFO", "commandstats")])
        )
        server, stats = _info(connection), _info(connection)
    if server is None or stats is None:
        return ServerReading(None, None)
    usec = sum(stats.get(f"cmdstat_{name}", {}).get("usec", 0) for name in PASS_COMMANDS)
    return ServerReading(str(server.get("run_id")), float(usec) / 1_000_000)


def _info(connection: Any) -> dict[str, Any] | None:
    """One INFO reply, read in full; None when refused (NOPERM: the user lacks +info)."""
    try:
        return parse_info(connection.read_response())  # type: ignore[no-any-return,no-untyped-call]
    except redis.ResponseError:
        return None


def _read_pages(
    connection: Any, pattern: str, count: int, probe: bool, budget: PassBudget | None
) -> Iterator[Page]:
    """The page reader. Each round trip asks for the next page and reads the keys of the
    page before, so reading the locks adds no round trip to the SCAN itself. Two round
    trips are in flight: the next is sent as soon as this one's SCAN reply is in, so Redis
    never waits for the client; and the pages are handed over while Redis works, so
    classifying them costs no wall time either. The first round trip also reads Redis'
    clock, the reference for ages. The pass's deadline is checked before each round trip.
    """

    def scan(cursor: int | None) -> tuple[Any, ...] | None:
        return None if cursor is None else ("SCAN", cursor, "MATCH", pattern, "COUNT", count)

    def send(*args: Any, **kwargs: Any) -> _RoundTrip:
        if budget:
            budget.check()
        return _RoundTrip(connection, *args, **kwargs)

    trip: _RoundTrip | None = send(scan(0), [], [], clock=True)
    untyped: list[tuple[bytes, int]] = []  # non-string locks waiting for their TYPE
    now = 0.0
    while trip is not None:
        clock, cursor, keys = trip.read_head()
        now = now if clock is None else clock
        if budget and trip.scan:
            budget.count_page(len(keys))
        following = None
        if cursor is not None or keys or untyped:
            pair = _two_slots(keys) if probe else ()
            probe = probe and not pair
            following = send(scan(cursor), keys, untyped, probe=pair)
        pages, untyped = trip.read_reads(now)
        if following is None and untyped:
            following, untyped = send(None, [], untyped), []
        # These pages are classified while Redis works on the following round trip.
        yield from pages
        trip = following


def _two_slots(keys: Sequence[bytes]) -> tuple[bytes, ...]:
    """Two keys in different hash slots, if the page has them: a Cluster node refuses a
    command across slots with CROSSSLOT."""
    slot = key_slot(keys[0]) if keys else None
    other = next((key for key in keys if key_slot(key) != slot), None)
    return () if other is None else (keys[0], other)


def _typed_page(now: float, untyped: Sequence[tuple[bytes, int]], types: Sequence[bytes]) -> Page:
    kinds = [kind.decode() for kind in types]
    held = [(key, pttl, kind) for (key, pttl), kind in zip(untyped, kinds, strict=True)]
    held = [lock for lock in held if lock[2] != "none"]
    return Page(
        now,
        [key for key, _, _ in held],
        [None] * len(held),
        [pttl for _, pttl, _ in held],
        [kind for _, _, kind in held],
        len(untyped) - len(held),
    )
