"""The scanner's own round trips against a real Redis: what it reads, how many round trips
that takes, and that a failed pass never leaves a connection with unread replies in the pool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from lock_monitor import scanner
from lock_monitor.scanner import read_locks
from tests.servers import RedisServer, redis_server

PATTERN = "lock:appointment:*"


def test_reads_strings_other_types_and_ttls_across_many_pages(tmp_path: Path) -> None:
    with redis_server(tmp_path) as server:
        client = server.client()
        client.mset({f"other:{i}": "x" for i in range(3000)})
        for i in range(250):
            client.set(f"lock:appointment:{i}", f"1700000000000:h{i}", px=60_000)
        client.set("lock:appointment:forever", "token")
        client.hset("lock:appointment:redisson", "uuid:1", 1)

        seen: set[bytes] = set()
        locks = {lock.key: lock for lock in read_locks(client, PATTERN, 100, seen)}

        assert len(locks) == 252
        assert seen == set(locks)
        assert locks[b"lock:appointment:7"].value == b"1700000000000:h7"
        assert 0 < locks[b"lock:appointment:7"].pttl_ms <= 60_000
        assert locks[b"lock:appointment:forever"].pttl_ms == -1
        hashed = locks[b"lock:appointment:redisson"]
        assert (hashed.kind, hashed.value) == ("hash", None)
        # Keys already seen in this pass (another node, a repeated page) are not read again.
        assert list(read_locks(client, PATTERN, 100, seen)) == []


def test_an_error_reply_fails_the_pass_and_the_connection_is_not_reused(tmp_path: Path) -> None:
    with redis_server(tmp_path) as server:
        admin = server.client()
        admin.set("lock:appointment:1", "1700000000000:h")
        admin.acl_setuser(
            "nomget", enabled=True, passwords=["+pw"], keys=["*"], commands=["+scan", "+time"]
        )
        client = server.client(username="nomget", password="pw", single_connection_client=False)

        with pytest.raises(redis.exceptions.NoPermissionError):
            list(read_locks(client, PATTERN, 100, set()))
        # The PTTL and SCAN replies after the refused MGET were never read: a reused
        # connection would hand them to the next command.
        assert client.time()[0] > 0
        assert client.scan(0, match=PATTERN, count=100) == (0, [b"lock:appointment:1"])


def test_one_round_trip_per_scan_page(
    redis_srv: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis_srv.client()
    client.mset({f"k:{i}": "x" for i in range(2000)})
    client.mset({f"lock:appointment:{i}": "token" for i in range(100)})
    client.config_resetstat()
    sent = []
    real = scanner._RoundTrip.send
    monkeypatch.setattr(scanner._RoundTrip, "send", lambda trip: sent.append(1) or real(trip))
    assert len(list(read_locks(client, PATTERN, 100, set()))) == 100
    scans = int(client.info("commandstats")["cmdstat_scan"]["calls"])
    assert scans > 10  # many pages ...
    assert len(sent) == scans + 1  # ... and one round trip each, plus the last reads


def test_keys_released_between_scan_and_read_are_not_read(
    redis_srv: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis_srv.client()
    client.mset({f"lock:appointment:{i}": "token" for i in range(10)})
    real = scanner._RoundTrip.receive
    calls = []

    def release_after_scan(trip: Any) -> list[Any]:
        replies = real(trip)
        if not calls:  # right after the first SCAN page: the holders release two locks
            client.delete("lock:appointment:3", "lock:appointment:7")
        calls.append(1)
        return replies

    monkeypatch.setattr(scanner._RoundTrip, "receive", release_after_scan)
    keys = {lock.key for lock in read_locks(client, PATTERN, 1000, set())}
    assert len(keys) == 8
    assert keys.isdisjoint({b"lock:appointment:3", b"lock:appointment:7"})
