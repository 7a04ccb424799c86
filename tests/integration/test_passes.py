"""A pass against a real redis-server: what is counted, what is not, and what a failure says."""

from typing import Any

import pytest
import redis

from lock_monitor.config import RedisSettings, ScanSettings
from lock_monitor.connection import Target, connect
from lock_monitor.passes import CLUSTER_HINT, PassFailed, PassResult, read_pass
from lock_monitor.passlocks import PassLocks
from lock_monitor.stuck_log import StuckMemory
from lock_monitor.tracker import DEADLINE_TOLERANCE_MS, LockTracker
from tests.servers import RedisServer, mixed_locks, wait_for


class Passes:
    """Successive passes on one connection, remembering first sightings and stuck locks, as
    the daemon's loop does."""

    def __init__(self, settings: RedisSettings, target: Target | None = None, **scan: Any) -> None:
        self.target = target or connect(settings)
        self.scan = ScanSettings(**scan)
        self.tracker = LockTracker(self.scan.stuck_threshold)
        self.stuck = StuckMemory()

    def read(self, keep_oldest: int | None = None) -> PassResult:
        result = read_pass(self.target, self.scan, self.tracker, self.stuck, keep_oldest)
        self.stuck = result.stuck.remembered
        return result


def passes_on(server: RedisServer, **scan: Any) -> Passes:
    return Passes(RedisSettings(url=server.url), **scan)


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
    result = passes_on(redis_srv, count=50).read()
    snapshot = result.snapshot
    assert snapshot.active == 250
    assert snapshot.keys_scanned == 250
    assert snapshot.stuck == 30
    assert (result.stuck.count, result.stuck.new_count) == (30, 30)
    assert len({lock.key for lock in snapshot.oldest}) == 250


def test_a_key_returned_twice_counts_once(redis_srv: RedisServer) -> None:
    """SCAN may repeat keys (and a cluster failover may show a key on two nodes)."""
    client = redis_srv.client()
    client.mset({f"lock:appointment:{i}": "token" for i in range(20)})
    target = connect(RedisSettings(url=redis_srv.url))
    twice = Target(target.settings, target.client)
    twice.nodes = lambda: [("a", target.client), ("b", target.client)]  # type: ignore[method-assign]
    snapshot = Passes(target.settings, twice).read().snapshot
    assert snapshot.active == 20
    assert snapshot.keys_scanned == 20


def test_locks_of_other_types_count_and_do_not_break_the_pass(redis_srv: RedisServer) -> None:
    client = redis_srv.client()
    client.hset("lock:appointment:redisson", "8743c9c0-0795:1", 1)  # Redisson's RLock
    client.pexpire("lock:appointment:redisson", 30_000)
    client.zadd("lock:appointment:symfony", {"token": 1})
    client.rpush("lock:appointment:list", "x")
    client.set("lock:appointment:plain", "token")
    snapshot = passes_on(redis_srv).read().snapshot
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
    passes = passes_on(redis_srv, stuck_threshold=0.3)
    first = passes.read().snapshot
    ages = {lock.key: lock.age_seconds for lock in first.oldest}
    assert ages["lock:appointment:old"] == pytest.approx(100, abs=2)
    assert ages["lock:appointment:future"] == 0
    assert ages["lock:appointment:opaque"] == 0

    # Redis' own clock is the reference: wait until it has moved past the threshold.
    wait_for(lambda: redis_now(client) > now + 0.5, what="Redis TIME to advance")
    result = passes.read()
    second, stuck = result.snapshot, result.stuck
    opaque = next(lock for lock in second.oldest if lock.key == "lock:appointment:opaque")
    assert opaque.age_seconds >= 0.5
    assert opaque.stuck
    assert stuck.count == 2  # the old one, stuck since the first pass, and now the opaque one
    assert [lock.key for *_, lock in stuck.new] == ["lock:appointment:opaque"]

    client.set("lock:appointment:opaque", "a1b2c3")  # released and taken again
    third = passes.read().snapshot
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
        "+getrange",
        "+pttl",
        "+type",
        "+time",
    )
    admin.set("lock:appointment:1", "token")
    settings = RedisSettings(url=redis_srv.url, username="narrow", password="pw")
    with pytest.raises(PassFailed) as failed:
        Passes(settings).read()
    assert list(failed.value.failures) == [settings.target()]
    assert failed.value.failures[settings.target()].startswith("NoPermissionError: ")
    assert "no permissions" in failed.value.failures[settings.target()]
    assert failed.value.nodes == ((settings.target(), False),)


def test_a_cluster_node_read_in_standalone_mode_hints_at_cluster_mode(
    cluster_node: RedisServer,
) -> None:
    node = cluster_node
    mixed_locks(node.client(), stuck=10, fresh=10)  # one SET each: keys in many slots
    with pytest.raises(PassFailed) as failed:
        passes_on(node).read()
    [reason] = failed.value.failures.values()
    assert reason.startswith("ClusterCrossSlotError: ")
    assert reason.endswith(f"; {CLUSTER_HINT}")
    in_cluster_mode = Passes(RedisSettings(url=node.url, mode="cluster")).read()
    assert in_cluster_mode.snapshot.active == 20


def getranges(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_getrange", {}).get("calls", 0))


def test_known_locks_are_read_by_their_ttl_alone_until_it_changes(redis_srv: RedisServer) -> None:
    """A second pass reads no value of a lock it knows and does not show; a renewal (the
    same token) keeps the lock's first sighting, another holder's token starts a new one."""
    client = redis_srv.client()
    for i in range(300):
        client.set(f"lock:appointment:{i}", f"token-{i}", px=600_000)
    passes = passes_on(redis_srv, count=20, stuck_threshold=1000)
    passes.read(keep_oldest=20)
    client.config_resetstat()
    assert passes.read(keep_oldest=20).snapshot.active == 300
    assert getranges(client) < 100  # the first pages, until 20 locks are kept to be shown
    read_at = redis_now(client)  # a lock taken again within DEADLINE_TOLERANCE_MS looks the same
    wait_for(lambda: redis_now(client) > read_at + 2 * DEADLINE_TOLERANCE_MS / 1000)
    client.pexpire("lock:appointment:1", 900_000)  # renewed by its holder
    client.delete("lock:appointment:2")
    client.set("lock:appointment:2", "token-new", px=600_000)  # taken again by another
    started = redis_now(client)
    client.config_resetstat()  # each pass reads its first pages in full, before its cut-off
    held = PassLocks()
    result = read_pass(passes.target, passes.scan, passes.tracker, passes.stuck, held=held)
    taken = {key: at for key, at, _, _ in held}
    assert result.snapshot.active == len(taken) == 300
    assert taken[b"lock:appointment:1"] == taken[b"lock:appointment:0"] < started  # first pass
    assert taken[b"lock:appointment:2"] > started  # this one
    assert getranges(client) < 100
