"""Sentinel: one primary, one replica, three Sentinels, and a forced failover.

The data nodes and the Sentinels have different passwords, so each must reach its place.
"""

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.servers import (
    MonitorProcess,
    SentinelSet,
    cli_error,
    monitor_env,
    run_monitor,
    running_monitor,
    set_locks,
    wait_for,
)

LOCKS = 40
MASTER = "locks"
DATA_PASSWORD = "data-s3cret"
SENTINEL_PASSWORD = "sentinel-s3cret"


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    servers = SentinelSet(
        tmp_path_factory.mktemp("sentinel"), MASTER, DATA_PASSWORD, SENTINEL_PASSWORD
    )
    try:
        servers.start()
        set_locks(
            servers.primary.client(password=DATA_PASSWORD),
            [f"lock:appointment:{i}" for i in range(LOCKS)],
            age=1,
        )
        yield servers
    finally:
        servers.stop()


def sentinel_args(servers: SentinelSet) -> list[str]:
    args = ["--redis-mode", "sentinel", "--sentinel-master", MASTER]
    for sentinel in servers.sentinels:
        args += ["--sentinel", f"127.0.0.1:{sentinel.port}"]
    return args


def run_locks(servers: SentinelSet, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_monitor(
        "locks", "--json", *sentinel_args(servers), *extra,
        env=monitor_env(REDIS_PASSWORD=DATA_PASSWORD, **env),
    )  # fmt: skip


def test_locks_reads_the_primary_with_the_sentinel_password_file(
    sentinels: SentinelSet, tmp_path: Path
) -> None:
    secret = tmp_path / "sentinel-password"
    secret.write_text(SENTINEL_PASSWORD + "\n")
    result = run_locks(sentinels, "--sentinel-password-file", str(secret))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pass"]["active"] == LOCKS


def test_a_wrong_sentinel_password_is_one_clear_line(sentinels: SentinelSet) -> None:
    result = run_locks(sentinels, LOCK_MONITOR_SENTINEL_PASSWORD="wrong-pw")
    line = cli_error(result)
    assert f"no Sentinel names a primary for '{MASTER}'" in line
    assert "AuthenticationError" in line
    assert "wrong-pw" not in result.stderr
    assert "Traceback" not in result.stderr


def status(monitor: MonitorProcess) -> dict[str, object]:
    return json.loads(monitor.get("/locks")[1])


def test_daemon_follows_a_forced_failover(sentinels: SentinelSet) -> None:
    env = monitor_env(
        REDIS_PASSWORD=DATA_PASSWORD, LOCK_MONITOR_SENTINEL_PASSWORD=SENTINEL_PASSWORD
    )
    with running_monitor(*sentinel_args(sentinels), "--interval", "0.2", env=env) as monitor:
        wait_for(lambda: monitor.value("active_locks_count") == LOCKS, what="the locks")
        old = sentinels.primary_port()
        assert status(monitor)["nodes"] == [{"node": f"127.0.0.1:{old}", "up": True}]
        assert monitor.value("lock_monitor_build_info", mode="sentinel") == 1

        new = sentinels.failover()
        seen: set[float | None] = set()

        def on_new_primary() -> bool:
            seen.add(monitor.value("active_locks_count"))
            return status(monitor)["nodes"] == [{"node": f"127.0.0.1:{new.port}", "up": True}]

        wait_for(on_new_primary, what="the monitor reading the new primary")
        assert seen <= {LOCKS, None}  # never a wrong count while switching
        set_locks(new.client(password=DATA_PASSWORD), ["lock:appointment:new"], age=1)
        wait_for(lambda: monitor.value("active_locks_count") == LOCKS + 1, what="the new lock")
        assert status(monitor)["redis_up"] is True
    assert DATA_PASSWORD not in "\n".join(monitor.log_lines)
    assert SENTINEL_PASSWORD not in "\n".join(monitor.log_lines)


def lock_count(client: redis.Redis) -> int:
    return sum(1 for _ in client.scan_iter(match="lock:appointment:*", count=1000))


def test_events_follow_the_primary_across_a_failover(sentinels: SentinelSet) -> None:
    env = monitor_env(
        REDIS_PASSWORD=DATA_PASSWORD, LOCK_MONITOR_SENTINEL_PASSWORD=SENTINEL_PASSWORD
    )
    with running_monitor(*sentinel_args(sentinels), "--interval", "30", env=env) as monitor:

        def events_on(port: int) -> bool:
            events = status(monitor)["events"]
            assert isinstance(events, dict)
            return bool(events["live"]) and [n["node"] for n in events["nodes"]] == [
                f"127.0.0.1:{port}"
            ]

        old = sentinels.primary_port()
        wait_for(lambda: events_on(old), what="events from the primary")
        primary = sentinels.primary if sentinels.primary.port == old else sentinels.replica
        client = primary.client(password=DATA_PASSWORD)
        set_locks(client, ["lock:appointment:ev-1"], age=0)
        wait_for(lambda: monitor.value("lock_monitor_lock_acquisitions_total") == 1, what="one")

        new = sentinels.failover()
        wait_for(lambda: events_on(new.port), what="events from the new primary")
        assert monitor.value("lock_monitor_events_reconnects_total") == 1
        client = new.client(password=DATA_PASSWORD)
        set_locks(client, ["lock:appointment:ev-2"], age=0)
        wait_for(lambda: monitor.value("lock_monitor_lock_acquisitions_total") == 2, what="two")
        # A forced failover may lose the last writes: the live set follows what the new
        # primary holds, as its next pass read it.
        assert monitor.value("active_locks_count") == lock_count(client)
    assert DATA_PASSWORD not in "\n".join(monitor.log_lines)
