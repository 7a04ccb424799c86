"""Reading the locks of one Redis node: SCAN pages, each followed by one round trip of reads.

The cost of a pass is dominated by round trips (a SCAN at COUNT 1000 over a million keys
is about a thousand calls), so the reads for one page travel in the same round trip as the
SCAN for the next page: a pass costs as many round trips as a bare SCAN, plus one.
Each round trip is packed, sent and read on one connection held for the pass, without
redis-py's pipeline layer: its per-command bookkeeping cost 10-15 % of the pass at ten
locks per page, while the wire traffic is the same (see "Performance" in the README).
The locks of one page are handed over, and classified, while the next round trip is in flight.
Nothing here blocks Redis: SCAN with a bounded COUNT, MGET, PTTL and TYPE only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import redis
from redis.crc import key_slot

from lock_monitor.locks import RawLock

# A PTTL of -2 means the key went away between SCAN and the read: released, not a lock.
_GONE = -2


class _Batch:
    """The commands of one round trip, sent in one write on the pass's connection."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.commands: list[tuple[Any, ...]] = []

    def add(self, *command: Any) -> None:
        self.commands.append(command)

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
    client: redis.Redis, pattern: str, count: int, seen: set[bytes], cluster: bool = False
) -> Iterator[RawLock]:
    """Yield every live lock on `client` matching `pattern` once.

    `seen` holds the keys already yielded in this pass (SCAN may return a key twice, and in
    a cluster a key can show on two nodes during a failover); it is updated here.
    MGET answers nil for keys that are not strings; those get a TYPE in the next round trip.
    `cluster`: `client` is one node of a Redis Cluster.
    """
    pool = client.connection_pool
    connection: Any = pool.get_connection()
    try:
        yield from _read_pages(connection, pattern, count, seen, cluster)
    except BaseException:
        connection.disconnect()  # replies may be left unread: never reuse this connection
        raise
    finally:
        pool.release(connection)


def _read_pages(
    connection: Any, pattern: str, count: int, seen: set[bytes], cluster: bool
) -> Iterator[RawLock]:
    first = _Batch(connection)
    first.add("TIME")
    first.add("SCAN", 0, "MATCH", pattern, "COUNT", count)
    first.send()
    (seconds, micros), (cursor, keys) = first.receive()
    now = int(seconds) + int(micros) / 1_000_000
    untyped: list[tuple[bytes, int]] = []  # non-string locks waiting for their TYPE
    ready: list[RawLock] = []  # read, not yet handed over
    more = True
    while more or keys or untyped:
        more = int(cursor) != 0
        groups = _mget_groups([key for key in dict.fromkeys(keys) if key not in seen], cluster)
        fresh = [key for group in groups for key in group]
        seen.update(fresh)
        batch = _Batch(connection)
        for group in groups:
            batch.add("MGET", *group)
        for key in fresh:
            batch.add("PTTL", key)
        for key, _ in untyped:
            batch.add("TYPE", key)
        if more:
            batch.add("SCAN", cursor, "MATCH", pattern, "COUNT", count)
        if batch:
            batch.send()
        # The previous page's locks are classified while Redis works on this round trip.
        yield from ready
        results = batch.receive() if batch else []

        values = [value for group in results[: len(groups)] for value in group]
        pttls = results[len(groups) : len(groups) + len(fresh)]
        types = results[len(groups) + len(fresh) :][: len(untyped)]
        ready = [
            RawLock(key, None, pttl, _text(kind), now)
            for (key, pttl), kind in zip(untyped, types, strict=True)
            if _text(kind) != "none"
        ]
        untyped = []
        for key, value, pttl in zip(fresh, values, pttls, strict=True):
            if pttl == _GONE:
                continue
            if value is None:
                untyped.append((key, pttl))
            else:
                ready.append(RawLock(key, value, pttl, "string", now))
        cursor, keys = results[-1] if more else (0, [])
    yield from ready
