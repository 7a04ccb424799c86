"""The wire under a pass: commands packed and replies read in bulk on one held connection,
and the INFO readings taken around a pass.

A pass sends the same command for thousands of keys; redis-py's per-command bookkeeping
costs more than the wire (see docs/performance.md), so those commands are packed here at
once and their replies taken straight from its hiredis parser.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Any, NamedTuple

import redis
from redis._parsers.helpers import parse_info
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.exceptions import ResponseError

from lock_monitor.deadline import PassBudget

_PLAIN_REPLIES = {bytes, int, list}
# Every command a pass sends: Redis' time in them is what pacing counts (see server_reading).
PASS_COMMANDS = ("scan", "getrange", "pttl", "type", "exists", "time")


def bulk(arguments: Sequence[bytes]) -> list[bytes]:
    """Arguments as RESP bulk strings."""
    return [b"$%d\r\n%s\r\n" % (len(argument), argument) for argument in arguments]


def per_key(keys: Sequence[bytes], first: Sequence[bytes], *rest: Sequence[bytes]) -> bytes:
    """Each command (a name and the arguments after the key) for each of `keys` (bulk
    strings), key by key: Redis finds the key in its cache for the commands after the first.
    The same bytes redis-py would write, without its per-argument Python work."""
    if not keys:
        return b""
    commands = (first, *rest)
    heads = [b"*%d\r\n$%d\r\n%s\r\n" % (len(c) + 1, len(c[0]), c[0]) for c in commands]
    tails = [b"".join(bulk(command[1:])) for command in commands]
    stride, count = 2 * len(commands), len(keys)
    parts = [tails[-1] + heads[0]] * (stride * count)  # what ends a key's last command
    for i in range(len(commands)):
        if i:
            parts[2 * i :: stride] = [tails[i - 1] + heads[i]] * count
        parts[2 * i + 1 :: stride] = keys
    parts[0] = heads[0]
    return b"".join(parts) + tails[-1]


def receive(connection: Any, count: int) -> list[Any]:
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


def plain(replies: Sequence[Any]) -> bool:
    """No error among `replies` (one C-level pass; errors are rare)."""
    return set(map(type, replies)) <= _PLAIN_REPLIES


def raise_errors(replies: Sequence[Any]) -> None:
    if not plain(replies):
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply


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
