"""`lock-monitor locks`: one pass now, printed for a person or a script."""

import json
from pathlib import Path

from tests.resp import Error, fake_redis
from tests.servers import (
    RedisServer,
    cli_error,
    free_port,
    mixed_locks,
    monitor_env,
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


def test_unreachable_redis_is_one_line_and_exit_1() -> None:
    env = monitor_env(LOCK_MONITOR_REDIS_URL=f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    line = cli_error(run_monitor("locks", "--redis-timeout", "1", env=env))
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


ESCAPES = "\x1b]0;owned\x07\x1b[2J\r\nlock:appointment:fake  0.0s  never  no  x\x9b"


def test_table_shows_control_characters_as_escapes_and_json_keeps_them(
    redis_srv: RedisServer,
) -> None:
    key, value = ("lock:appointment:" + ESCAPES).encode(), ("1:" + ESCAPES).encode()
    redis_srv.client().set(key, value, px=30_000)
    result = run_monitor("locks", "--redis-url", redis_srv.url)
    assert result.returncode == 0, result.stderr
    [_, row, _] = result.stdout.splitlines()  # header, one row, the counts: no fake row
    assert "\x1b" not in result.stdout
    assert "\r" not in result.stdout
    assert row.startswith("lock:appointment:\\x1b]0;owned\\x07\\x1b[2J\\r\\nlock:appointment:fake")
    document = json.loads(run_monitor("locks", "--json", "--redis-url", redis_srv.url).stdout)
    assert document["locks"][0]["key"].encode() == key


def test_a_server_error_with_escapes_is_printed_escaped() -> None:
    def handler(command: list[bytes]) -> object:
        return Error("ERR \x1b]0;owned\x07\x1b[2J") if command[0] != b"CLIENT" else "OK"

    with fake_redis(handler) as server:
        line = cli_error(run_monitor("locks", "--redis-url", server.url))
    assert "\x1b" not in line
    assert "\x07" not in line
    assert line.endswith("ResponseError: \\x1b]0;owned\\x07\\x1b[2J")
