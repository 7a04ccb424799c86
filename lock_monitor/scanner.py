"""Reading the locks of one Redis node: SCAN pages, each followed by one pipeline of reads.

The cost of a pass is dominated by round trips (a SCAN at COUNT 1000 over a million keys
is about a thousand calls), so the reads for one page travel in the same pipeline as the
SCAN for the next page: a pass costs as many round trips as a bare SCAN, plus one.
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


def _execute(pipe: Any) -> list[Any]:
    """Run a pipeline; a command error (NOPERM, say) fails the pass instead of hiding."""
    results: list[Any] = pipe.execute(raise_on_error=False)
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _mget_batches(keys: list[bytes], cluster: bool) -> list[list[bytes]]:
    """One MGET for the page; a cluster node refuses an MGET across hash slots, so one per slot."""
    if not cluster:
        return [keys] if keys else []
    batches: dict[int, list[bytes]] = {}
    for key in keys:
        batches.setdefault(key_slot(key), []).append(key)
    return list(batches.values())


def read_locks(
    client: redis.Redis, pattern: str, count: int, seen: set[bytes], cluster: bool = False
) -> Iterator[RawLock]:
    """Yield every live lock on `client` matching `pattern` once.

    `seen` holds the keys already yielded in this pass (SCAN may return a key twice, and in
    a cluster a key can show on two nodes during a failover); it is updated here.
    MGET answers nil for keys that are not strings; those get a TYPE in the next round trip.
    `cluster`: `client` is one node of a Redis Cluster.
    """
    pipe = client.pipeline(transaction=False)
    pipe.time()
    pipe.scan(0, match=pattern, count=count)
    (seconds, micros), (cursor, keys) = _execute(pipe)
    now = seconds + micros / 1_000_000
    untyped: list[tuple[bytes, int]] = []  # non-string locks waiting for their TYPE
    more = True
    while more or keys or untyped:
        more = cursor != 0
        batches = _mget_batches([key for key in dict.fromkeys(keys) if key not in seen], cluster)
        fresh = [key for batch in batches for key in batch]
        seen.update(fresh)
        pipe = client.pipeline(transaction=False)
        for batch in batches:
            pipe.mget(batch)
        for key in fresh:
            pipe.pttl(key)
        for key, _ in untyped:
            pipe.type(key)
        if more:
            pipe.scan(cursor, match=pattern, count=count)
        results = _execute(pipe) if len(pipe) else []

        values = [value for batch in results[: len(batches)] for value in batch]
        pttls = results[len(batches) : len(batches) + len(fresh)]
        types = results[len(batches) + len(fresh) :][: len(untyped)]
        for (key, pttl), kind in zip(untyped, types, strict=True):
            if _text(kind) != "none":
                yield RawLock(key, None, pttl, _text(kind), now)
        untyped = []
        for key, value, pttl in zip(fresh, values, pttls, strict=True):
            if pttl == _GONE:
                continue
            if value is None:
                untyped.append((key, pttl))
            else:
                yield RawLock(key, value, pttl, "string", now)
        cursor, keys = results[-1] if more else (0, [])
