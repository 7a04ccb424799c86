"""`lock-monitor locks`: one pass now, printed for a person or a script."""

import json
from pathlib import Path

from tests.servers import (
    RedisServer,
    cli_error,
    free_port,
    mixed_locks,
    one_node_cluster,
    run_monitor,
)


def test_table_oldest_first(redis_srv: RedisServer) -> None:
    client = redis_srv.client()
    mixed_locks(client, stuck=2, fresh=2, no_ttl=1)
    result = run_monitor("locks", "--redis-url", redis_srv.url)
    assert result.returncode == 0, result.stderr
    header, *rows, summary = result.stdout.splitlines()
    assert header.split() == ["KEY", "AGE", "TTL", "STUCK", "VALUE"]
    assert len(rows) == 5
    ages = [float(row.split()[1].rstrip("s")) for row in rows]
    assert ages == sorted(ages, reverse=True)
    assert [row.split()[3] for row in rows[:2]] == ["yes", "yes"]
    ttls = {row.split()[0]: row.split()[2] for row in rows}
    assert ttls["lock:appointment:n0"] == "never"
    assert ttls["lock:appointment:f0"].endswith("s")
    assert summary.startswith("5 active, 2 stuck, 1 without TTL")


def test_json_and_stuck_only(redis_srv: RedisServer) -> None:
    mixed_locks(redis_srv.client(), stuck=3, fresh=4)
    result = run_monitor("locks", "--json", "--stuck", "--redis-url", redis_srv.url)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["pass"]["active"], document["pass"]["stuck"]) == (7, 3)
    assert len(document["locks"]) == 3
    assert all(lock["stuck"] and lock["age_source"] == "value" for lock in document["locks"])


def test_the_oldest_are_printed_and_every_lock_is_counted(redis_srv: RedisServer) -> None:
    mixed_locks(redis_srv.client(), stuck=3, fresh=4)
    result = run_monitor("locks", "--limit", "2", "--redis-url", redis_srv.url)
    assert result.returncode == 0, result.stderr
    _, *rows, summary, note = result.stdout.splitlines()
    assert [row.split()[3] for row in rows] == ["yes", "yes"]
    assert summary.startswith("7 active, 3 stuck")
    assert note == "(the oldest 2 of 7 locks: --limit N for more, --all for every lock)"
    document = json.loads(
        run_monitor("locks", "--json", "--limit", "0", "--redis-url", redis_srv.url).stdout
    )
    assert (document["pass"]["active"], document["locks"]) == (7, [])


def test_all_streams_every_lock_as_json_lines(redis_srv: RedisServer) -> None:
    mixed_locks(redis_srv.client(), stuck=3, fresh=150)
    result = run_monitor("locks", "--all", "--scan-count", "10", "--redis-url", redis_srv.url)
    assert result.returncode == 0, result.stderr
    locks = [json.loads(line) for line in result.stdout.splitlines()]
    assert len({lock["key"] for lock in locks}) == len(locks) == 153
    assert sum(lock["stuck"] for lock in locks) == 3
    stuck = run_monitor("locks", "--all", "--stuck", "--redis-url", redis_srv.url)
    assert [json.loads(line)["stuck"] for line in stuck.stdout.splitlines()] == [True] * 3


def test_unreachable_redis_is_one_line_and_exit_1() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    line = cli_error(run_monitor("locks", "--redis-url", url, "--redis-timeout", "1"))
    assert "cannot read locks from redis://127.0.0.1:" in line
    assert line.count("redis://") == 1  # the target once, not again as the node
    assert "hunter2" not in line


def test_a_cluster_node_in_standalone_mode_says_to_use_cluster_mode(tmp_path: Path) -> None:
    with one_node_cluster(tmp_path) as node:
        mixed_locks(node.client(), stuck=2, fresh=8)
        line = cli_error(run_monitor("locks", "--redis-url", node.url))
        assert line.startswith(f"lock-monitor: error: cannot read locks from {node.url}: ")
        assert "ClusterCrossSlotError" in line
        assert line.endswith("this looks like a Redis Cluster node: use --redis-mode cluster")
        fixed = run_monitor("locks", "--json", "--redis-mode", "cluster", "--redis-url", node.url)
        assert fixed.returncode == 0, fixed.stderr
        assert json.loads(fixed.stdout)["pass"]["active"] == 10
