"""Reading the locks of one Redis node: SCAN pages, each followed by one round trip of reads.

The cost of a pass is dominated by round trips (one SCAN call per page), so the reads for
one page travel in the same round trip as the SCAN for the next page: a pass costs as many
round trips as a bare SCAN, plus one. Each round trip is packed, sent and read on one
connection held for the pass, without redis-py's pipeline layer, whose per-command
bookkeeping costs more than the wire (see docs/performance.md).
Nothing here blocks Redis: SCAN with a bounded COUNT, MGET, PTTL and TYPE only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import redis
from redis._parsers.helpers import parse_info
from redis.crc import key_slot

from lock_monitor.deadline import PassBudget
from lock_monitor.locks import RawLock

# A PTTL of -2 means the key went away between SCAN and the read: released, not a lock.
_GONE = -2
# Every command a pass sends: Redis' time in them is what pacing counts (see server_reading).
PASS_COMMANDS = ("scan", "mget", "pttl", "type", "time")


class _RoundTrip:
    """The commands of one round trip, sent in one write on the pass's connection.

    Each `add` returns the slice its replies will occupy, so the layout of a round trip is
    written once, where its commands are added.
    """

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.commands: list[tuple[Any, ...]] = []

    def add(self, commands: Iterable[tuple[Any, ...]]) -> slice:
        start = len(self.commands)
        self.commands.extend(commands)
        return slice(start, len(self.commands))

    def __len__(self) -> int:
        return len(self.commands)

    def send(self) -> None:
        self.connection.send_packed_command(self.connection.pack_commands(self.commands))

    def receive(self) -> list[Any]:
        """The replies, in order; an error reply (NOPERM, say) raises and fails the pass."""
        return [self.connection.read_response() for _ in self.commands]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _mget_groups(keys: list[bytes], cluster: bool) -> list[list[bytes]]:
    """One MGET for the page; a cluster node refuses an MGET across hash slots, so one per slot."""
    if not cluster:
        return [keys] if keys else []
    groups: dict[int, list[bytes]] = {}
    for key in keys:
        groups.setdefault(key_slot(key), []).append(key)
    return list(groups.values())


def read_locks(
    client: redis.Redis,
    pattern: str,
    count: int,
    seen: set[bytes],
    cluster: bool = False,
    budget: PassBudget | None = None,
) -> Iterator[RawLock]:
    """Yield every live lock on `client` matching `pattern` once.

    `seen` holds the keys already yielded in this pass (SCAN may return a key twice, and in
    a cluster a key can show on two nodes during a failover); it is updated here.
    MGET answers nil for keys that are not strings; those get a TYPE in the next round trip.
    `cluster`: `client` is one node of a Redis Cluster. `budget`: the pass's limits.
    """
    with held_connection(client, budget) as connection:
        yield from _read_pages(connection, pattern, count, seen, cluster, budget)


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
    connection: Any,
    pattern: str,
    count: int,
    seen: set[bytes],
    cluster: bool,
    budget: PassBudget | None,
) -> Iterator[RawLock]:
    """The page reader: each round trip reads the keys of the page before and asks for the
    next page, so reading the locks adds no round trip to the SCAN itself; and it yields
    one page's locks while Redis works on the next round trip, so classifying them costs no
    wall time either. The first round trip also reads Redis' clock, the reference for ages.
    """
    cursor: int | None = 0  # the next page to ask for; None once SCAN has returned the last
    keys: list[bytes] = []  # the page just returned, not yet read
    untyped: list[tuple[bytes, int]] = []  # non-string locks waiting for their TYPE
    ready: list[RawLock] = []  # read, not yet handed over
    now = 0.0
    while cursor is not None or keys or untyped:
        groups = _mget_groups([key for key in dict.fromkeys(keys) if key not in seen], cluster)
        fresh = [key for group in groups for key in group]
        seen.update(fresh)
        trip = _RoundTrip(connection)
        clock_at = trip.add([("TIME",)] if cursor == 0 else [])
        values_at = trip.add(("MGET", *group) for group in groups)
        pttls_at = trip.add(("PTTL", key) for key in fresh)
        types_at = trip.add(("TYPE", key) for key, _ in untyped)
        page_at = trip.add(
            [] if cursor is None else [("SCAN", cursor, "MATCH", pattern, "COUNT", count)]
        )
        if trip:
            if budget:
                budget.check()
            trip.send()
        # The previous page's locks are classified while Redis works on this round trip.
        yield from ready
        replies = trip.receive() if trip else []

        if replies[clock_at]:
            seconds, micros = replies[clock_at][0]
            now = int(seconds) + int(micros) / 1_000_000
        values = [value for group in replies[values_at] for value in group]
        ready = [
            RawLock(key, None, pttl, _text(kind), now)
            for (key, pttl), kind in zip(untyped, replies[types_at], strict=True)
            if _text(kind) != "none"
        ]
        untyped = []
        for key, value, pttl in zip(fresh, values, replies[pttls_at], strict=True):
            if pttl == _GONE:
                continue
            if value is None:
                untyped.append((key, pttl))
            else:
                ready.append(RawLock(key, value, pttl, "string", now))
        keys = []
        if cursor is not None:
            next_cursor, keys = replies[page_at][0]
            cursor = int(next_cursor) or None
            if budget:
                budget.count_page(len(keys))
    yield from ready
