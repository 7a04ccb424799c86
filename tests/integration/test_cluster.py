"""Redis Cluster: 3 primaries with a replica each, locks spread over the slots.

One cluster serves the module (it takes seconds to form); the failover test restores it.
"""

import json
from collections.abc import Iterator
from typing import Any

import pytest

from lock_monitor import connection
from lock_monitor.config import RedisSettings, ScanSettings
from lock_monitor.passes import read_pass
from lock_monitor.stuck_log import StuckMemory
from lock_monitor.tracker import LockTracker
from tests.servers import (
    ClusterServers,
    MonitorProcess,
    RedisServer,
    run_monitor,
    running_monitor,
    set_locks,
    wait_for,
)

LOCKS = 300
STUCK = 30  # taken two minutes ago: past the 30 s threshold


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterServers]:
    servers = ClusterServers(tmp_path_factory.mktemp("cluster"))
    try:
        servers.start()
        client = servers.client()
        keys = [f"lock:appointment:{i}" for i in range(LOCKS)]
        set_locks(client, keys[STUCK:], age=1)
        set_locks(client, keys[:STUCK], age=120)
        client.set("session:1", "not a lock")
        client.close()
        # The test is only worth something if every primary holds a share.
        assert all(server.client().dbsize() > 50 for server in servers.primaries())
        yield servers
    finally:
        servers.stop()


def node_name(server: RedisServer) -> str:
    return f"127.0.0.1:{server.port}"


def test_locks_command_counts_each_lock_once(cluster: ClusterServers) -> None:
    result = run_monitor(
        "locks", "--json", "--redis-mode", "cluster", "--redis-url", cluster.seed_url
    )
    assert result.returncode == 3, result.stderr  # some are stuck
    document = json.loads(result.stdout)
    assert (document["pass"]["active"], document["pass"]["stuck"]) == (LOCKS, STUCK)
    every = run_monitor(
        "locks", "--all", "--redis-mode", "cluster", "--redis-url", cluster.seed_url
    )
    assert every.returncode == 3, every.stderr
    keys = [json.loads(line)["key"] for line in every.stdout.splitlines()]
    assert len(keys) == len(set(keys)) == LOCKS


def test_every_primary_connection_gets_the_no_touch_hook(
    cluster: ClusterServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooked: list[int] = []
    real = connection._no_touch

    def spy(conn: Any) -> None:
        hooked.append(conn.port)
        real(conn)

    monkeypatch.setattr(connection, "_no_touch", spy)
    target = connection.connect(RedisSettings(url=cluster.seed_url, mode="cluster"))
    result = read_pass(
        target, ScanSettings(), LockTracker(ScanSettings.stuck_threshold), StuckMemory()
    )
    assert result.snapshot.active == LOCKS
    assert set(hooked) >= {server.port for server in cluster.primaries()}
    assert {name for name, up in result.nodes if up} == {
        node_name(server) for server in cluster.primaries()
    }


def node_up(monitor: MonitorProcess) -> dict[str, float]:
    return {
        sample.labels["node"]: sample.value
        for sample in monitor.metrics().get("lock_monitor_node_up", [])
    }


def test_daemon_follows_a_failover_without_restart(cluster: ClusterServers) -> None:
    seed = cluster.servers[0]
    victim = seed if seed in cluster.primaries() else cluster.primaries()[0]
    before = {node_name(server) for server in cluster.primaries()}
    args = ("--redis-mode", "cluster", "--redis-url", seed.url, "--interval", "0.2")
    try:
        with running_monitor(*args) as monitor:
            wait_for(lambda: monitor.value("active_locks_count") == LOCKS, what="all locks")
            assert monitor.value("stuck_locks_count") == STUCK
            assert node_up(monitor) == {name: 1.0 for name in before}
            assert monitor.value("lock_monitor_build_info", mode="cluster") == 1

            victim.stop()  # SIGKILL: its share of the locks cannot be read
            wait_for(
                lambda: node_up(monitor).get(node_name(victim)) == 0,
                what="node_up 0 for the victim",
            )
            assert monitor.value("active_locks_count") is None  # absent, never a short count
            status = json.loads(monitor.get("/locks")[1])
            assert status["redis_up"] is False
            assert node_name(victim) in status["last_error"]
            assert {"node": node_name(victim), "up": False} in status["nodes"]
            assert f"{node_name(victim)}: DOWN" in monitor.get("/")[1]

            cluster.wait_healthy()  # the victim's replica has taken over its slots
            after = {node_name(server) for server in cluster.primaries()}
            assert node_name(victim) not in after
            wait_for(lambda: node_up(monitor) == {name: 1.0 for name in after}, what="new node set")
            wait_for(lambda: monitor.value("active_locks_count") == LOCKS, what="counts back")
            assert monitor.value("stuck_locks_count") == STUCK
        events = monitor.events()
        lost = next(event for event in events if event["event"] == "redis_lost")
        assert node_name(victim) in str(lost["error"])
        assert any(event["event"] == "redis_recovered" for event in events)
    finally:
        if victim.process is None:
            victim.start()  # rejoins as a replica: the cluster is whole again for other tests
            cluster.wait_healthy()


def events_document(monitor: MonitorProcess) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(monitor.get("/locks")[1])["events"]
    return document


def test_events_from_every_primary_and_across_a_failover(cluster: ClusterServers) -> None:
    """A subscriber per primary; when one dies, its replica's events are followed instead."""
    seed = cluster.servers[0]
    victim = next(server for server in cluster.primaries() if server is not seed)
    args = ("--redis-mode", "cluster", "--redis-url", seed.url, "--interval", "30")
    client = cluster.client()
    try:
        with running_monitor(*args) as monitor:
            wait_for(lambda: events_document(monitor)["live"], what="events live on every node")
            subscribed = {node["node"] for node in events_document(monitor)["nodes"]}
            assert subscribed == {node_name(server) for server in cluster.primaries()}
            assert monitor.value("active_locks_count") == LOCKS

            sizes = {server.port: server.client().dbsize() for server in cluster.primaries()}
            keys = [f"lock:appointment:events-{i}" for i in range(30)]
            set_locks(client, keys, age=0)
            assert all(
                server.client().dbsize() > sizes[server.port] for server in cluster.primaries()
            )  # every primary took some: each subscriber had something to report
            wait_for(
                lambda: monitor.value("lock_monitor_lock_acquisitions_total") == len(keys),
                what="an acquisition from every primary",
            )
            assert monitor.value("active_locks_count") == LOCKS + len(keys)

            victim.stop()
            wait_for(lambda: monitor.value("lock_monitor_events_up") == 0, what="events down")
            cluster.wait_healthy()
            after = {node_name(server) for server in cluster.primaries()}
            wait_for(
                lambda: (
                    {n["node"] for n in events_document(monitor)["nodes"]} == after
                    and events_document(monitor)["live"]
                ),
                what="subscribed to the new primary, reconciled",
            )
            assert monitor.value("lock_monitor_events_reconnects_total") == 1
            promoted = next(s for s in cluster.primaries() if node_name(s) not in subscribed)
            before = promoted.client().dbsize()
            client.close()
            client = cluster.client()
            more = [f"lock:appointment:after-{i}" for i in range(30)]
            set_locks(client, more, age=0)
            assert promoted.client().dbsize() > before
            wait_for(
                lambda: (
                    monitor.value("lock_monitor_lock_acquisitions_total") == len(keys) + len(more)
                ),
                what="acquisitions on the promoted replica",
            )
            assert monitor.value("active_locks_count") == LOCKS + len(keys) + len(more)
            client.delete(*keys, *more)
            wait_for(lambda: monitor.value("active_locks_count") == LOCKS, what="released")
            assert monitor.value("lock_monitor_reconcile_corrections_total") == 0
    finally:
        client.close()
        if victim.process is None:
            victim.start()
            cluster.wait_healthy()
