"""A pass against a real redis-server: what is counted, what is not, and what it costs Redis."""

from typing import Any

import pytest
import redis

from lock_monitor import scanner
from lock_monitor.config import RedisSettings, ScanSettings
from lock_monitor.connection import Target, connect
from lock_monitor.monitor import Monitor, PassFailed
from tests.servers import RedisServer, wait_for


def monitor_for(server: RedisServer, **scan: Any) -> Monitor:
    return Monitor(RedisSettings(url=server.url), ScanSettings(**scan))


def redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + micros / 1e6


def test_every_lock_once_among_many_other_keys_over_many_pages(redis_srv: RedisServer) -> None:
    client = redis_srv.client()
    now_ms = int(redis_now(client) * 1000)
    pipe = client.pipeline(transaction=False)
    for i in range(3000):
        pipe.set(f"session:{i}", "x")
    for i in range(250):
        pipe.set(f"lock:appointment:{i}", now_ms - (40_000 if i < 30 else 1_000), px=60_000)
    pipe.execute()
    snapshot, stuck = monitor_for(redis_srv, count=50).run_pass(keep=None)
    assert snapshot.active == 250
    assert snapshot.keys_scanned == 250
    assert snapshot.stuck == 30
    assert len(stuck.ages) == 30
    assert len({lock.key for lock in snapshot.oldest}) == 250


def test_one_round_trip_per_scan_page(
    redis_srv: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis_srv.client()
    client.mset({f"k:{i}": "x" for i in range(2000)})
    client.mset({f"lock:appointment:{i}": "token" for i in range(100)})
    client.config_resetstat()
    executions = []
    real = scanner._Batch.send
    monkeypatch.setattr(scanner._Batch, "send", lambda batch: executions.append(1) or real(batch))
    snapshot, _ = monitor_for(redis_srv, count=100).run_pass()
    scans = int(client.info("commandstats")["cmdstat_scan"]["calls"])
    assert snapshot.active == 100
    assert scans > 10  # many pages ...
    assert len(executions) == scans + 1  # ... and one round trip each, plus the last reads


def test_a_key_returned_twice_counts_once(redis_srv: RedisServer) -> None:
    """SCAN may repeat keys (and a cluster failover may show a key on two nodes)."""
    client = redis_srv.client()
    client.mset({f"lock:appointment:{i}": "token" for i in range(20)})
    target = connect(RedisSettings(url=redis_srv.url))
    twice = Target(target.settings, target.client)
    twice.nodes = lambda: [("a", target.client), ("b", target.client)]  # type: ignore[method-assign]
    monitor = Monitor(target.settings, ScanSettings(), connector=lambda _: twice)
    snapshot, _ = monitor.run_pass()
    assert snapshot.active == 20
    assert snapshot.keys_scanned == 20


def test_keys_released_between_scan_and_read_are_not_counted(
    redis_srv: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis_srv.client()
    client.mset({f"lock:appointment:{i}": "token" for i in range(10)})
    real = scanner._Batch.receive
    calls = []

    def release_after_scan(batch: Any) -> list[Any]:
        results = real(batch)
        if not calls:  # right after the first SCAN page: the holders release two locks
            client.delete("lock:appointment:3", "lock:appointment:7")
        calls.append(1)
        return results

    monkeypatch.setattr(scanner._Batch, "receive", release_after_scan)
    snapshot, _ = monitor_for(redis_srv).run_pass(keep=None)
    assert snapshot.active == 8
    assert {lock.key for lock in snapshot.oldest}.isdisjoint(
        {"lock:appointment:3", "lock:appointment:7"}
    )


def test_locks_of_other_types_count_and_do_not_break_the_pass(redis_srv: RedisServer) -> None:
    client = redis_srv.client()
    client.hset("lock:appointment:redisson", "8743c9c0-0795:1", 1)  # Redisson's RLock
    client.pexpire("lock:appointment:redisson", 30_000)
    client.zadd("lock:appointment:symfony", {"token": 1})
    client.rpush("lock:appointment:list", "x")
    client.set("lock:appointment:plain", "token")
    snapshot, _ = monitor_for(redis_srv).run_pass(keep=None)
    kinds = {lock.key: (lock.kind, lock.ttl_seconds is None) for lock in snapshot.oldest}
    assert kinds == {
        "lock:appointment:redisson": ("hash", False),
        "lock:appointment:symfony": ("zset", True),
        "lock:appointment:list": ("list", True),
        "lock:appointment:plain": ("string", True),
    }
    assert snapshot.without_ttl == 3


def test_ages_from_values_future_values_and_first_sightings(redis_srv: RedisServer) -> None:
    client = redis_srv.client()
    now = redis_now(client)
    client.set("lock:appointment:old", f"{int((now - 100) * 1000)}:worker-1", px=30_000)
    client.set("lock:appointment:future", int((now + 3600) * 1000), px=30_000)
    client.set("lock:appointment:opaque", "9f1c2e")
    monitor = monitor_for(redis_srv, stuck_threshold=0.3)
    first, _ = monitor.run_pass(keep=None)
    ages = {lock.key: lock.age_seconds for lock in first.oldest}
    assert ages["lock:appointment:old"] == pytest.approx(100, abs=2)
    assert ages["lock:appointment:future"] == 0
    assert ages["lock:appointment:opaque"] == 0

    # Redis' own clock is the reference: wait until it has moved past the threshold.
    wait_for(lambda: redis_now(client) > now + 0.5, what="Redis TIME to advance")
    second, stuck = monitor.run_pass(keep=None)
    opaque = next(lock for lock in second.oldest if lock.key == "lock:appointment:opaque")
    assert opaque.age_seconds >= 0.5
    assert opaque.stuck
    assert set(stuck.ages) == {b"lock:appointment:old", b"lock:appointment:opaque"}

    client.set("lock:appointment:opaque", "a1b2c3")  # released and taken again
    third, _ = monitor.run_pass(keep=None)
    again = next(lock for lock in third.oldest if lock.key == "lock:appointment:opaque")
    assert again.age_seconds < 0.5
    assert not again.stuck


def test_a_read_the_user_may_not_make_fails_the_pass(redis_srv: RedisServer) -> None:
    admin = redis_srv.client()
    admin.execute_command(
        "ACL",
        "SETUSER",
        "narrow",
        "on",
        ">pw",
        "resetkeys",
        "~other:*",
        "-@all",
        "+scan",
        "+mget",
        "+pttl",
        "+type",
        "+time",
    )
    admin.set("lock:appointment:1", "token")
    settings = RedisSettings(url=redis_srv.url, username="narrow", password="pw")
    with pytest.raises(PassFailed, match=r"NoPermissionError: .*no permissions"):
        Monitor(settings, ScanSettings()).run_pass()
