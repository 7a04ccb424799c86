"""The scanner's own round trips against a real Redis: what it reads, how many round trips
that takes, and that a failed pass never leaves a connection with unread replies in the pool."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple
from unittest.mock import ANY

import pytest
import redis

from lock_monitor import scanner
from lock_monitor.locks import VALUE_PREFIX
from lock_monitor.scanner import Page, read_pages
from tests.servers import RedisServer, redis_server

PATTERN = "lock:appointment:*"


class Read(NamedTuple):
    value: bytes | None
    pttl_ms: int
    kind: str


def read(pages: Iterable[Page]) -> dict[bytes, Read]:
    """Every lock the pages hold, by key."""
    return {
        key: Read(value, pttl, "string" if page.kinds is None else page.kinds[i])
        for page in pages
        for i, (key, value, pttl) in enumerate(zip(page.keys, page.values, page.pttls, strict=True))
    }


def test_reads_strings_other_types_and_ttls_across_many_pages(tmp_path: Path) -> None:
    with redis_server(tmp_path) as server:
        client = server.client()
        client.mset({f"other:{i}": "x" for i in range(3000)})
        for i in range(250):
            client.set(f"lock:appointment:{i}", f"1700000000000:h{i}", px=60_000)
        client.set("lock:appointment:forever", "token")
        client.hset("lock:appointment:redisson", "uuid:1", 1)
        client.setrange("lock:appointment:huge", 5_000_000, "x")

        locks = read(read_pages(client, PATTERN, 100))

        assert len(locks) == 253
        assert locks[b"lock:appointment:7"] == Read(b"1700000000000:h7", ANY, "string")
        assert 0 < locks[b"lock:appointment:7"].pttl_ms <= 60_000
        assert locks[b"lock:appointment:forever"].pttl_ms == -1
        assert locks[b"lock:appointment:redisson"] == Read(None, ANY, "hash")
        # Only the first bytes of a value are read: they hold a timestamp and what is shown.
        assert locks[b"lock:appointment:huge"].value == b"\0" * VALUE_PREFIX


def test_an_error_reply_fails_the_pass_and_the_connection_is_not_reused(tmp_path: Path) -> None:
    with redis_server(tmp_path) as server:
        admin = server.client()
        admin.set("lock:appointment:1", "1700000000000:h")
        admin.acl_setuser(
            "noread", enabled=True, passwords=["+pw"], keys=["*"], commands=["+scan", "+time"]
        )
        client = server.client(username="noread", password="pw", single_connection_client=False)

        with pytest.raises(redis.exceptions.NoPermissionError):
            list(read_pages(client, PATTERN, 100))
        # The PTTL and SCAN replies after the refused GETRANGE were never read: a reused
        # connection would hand them to the next command.
        assert client.time()[0] > 0
        assert client.scan(0, match=PATTERN, count=100) == (0, [b"lock:appointment:1"])


def test_scan_runs_on_its_own_connection_and_reads_go_a_page_per_write(
    redis_srv: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SCAN chain never waits behind the reads: they go on another connection, each
    page's reads in one write."""
    client = redis_srv.client()
    client.mset({f"k:{i}": "x" for i in range(2000)})
    client.mset({f"lock:appointment:{i}": "token" for i in range(100)})
    client.config_resetstat()
    sends: list[tuple[int, str]] = []
    send = redis.connection.AbstractConnection.send_packed_command

    def sent(connection: Any, command: Any, *args: Any, **kwargs: Any) -> None:
        packed = b"".join(command if isinstance(command, list) else [command])
        if b"SCAN" in packed or b"PTTL" in packed:  # not the connections' handshakes
            sends.append((id(connection), "scan" if b"SCAN" in packed else "reads"))
        send(connection, command, *args, **kwargs)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", sent)
    assert len(read(read_pages(client, PATTERN, 100))) == 100
    stats = client.info("commandstats")
    scans = int(stats["cmdstat_scan"]["calls"])
    assert scans > 10
    assert [kind for _, kind in sends].count("scan") == scans
    assert len({connection for connection, kind in sends if kind == "scan"}) == 1
    assert len({connection for connection, kind in sends if kind == "reads"}) == 1
    assert len({connection for connection, _ in sends}) == 2
    assert [kind for _, kind in sends].count("reads") <= scans  # a write per page, at most
    assert int(stats["cmdstat_getrange"]["calls"]) == int(stats["cmdstat_pttl"]["calls"]) == 100


def test_keys_released_between_scan_and_read_are_not_read(
    redis_srv: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis_srv.client()
    client.mset({f"lock:appointment:{i}": "token" for i in range(10)})
    client.hset("lock:appointment:h", "owner", 1)
    real = scanner._Reads.__init__
    calls = []

    def release_after_scan(reads: Any, *args: Any, **kwargs: Any) -> None:
        if not calls:  # right after the first SCAN page: the holders release three locks
            client.delete("lock:appointment:3", "lock:appointment:7", "lock:appointment:h")
        calls.append(1)
        real(reads, *args, **kwargs)

    monkeypatch.setattr(scanner._Reads, "__init__", release_after_scan)
    pages = list(read_pages(client, PATTERN, 1000))
    keys = set(read(pages))
    assert len(keys) == 8
    assert keys.isdisjoint({b"lock:appointment:3", b"lock:appointment:7"})
    assert sum(page.released for page in pages) == 3
