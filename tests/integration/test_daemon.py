"""`lock-monitor run` as a process against a real redis-server, including its faults."""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.markdown import CONFIGURATION_DOC, section
from tests.servers import (
    MonitorProcess,
    RedisServer,
    mixed_locks,
    monitor_command,
    monitor_env,
    running_monitor,
    wait_for,
)

LOCK_GAUGES = (
    "active_locks_count",
    "stuck_locks_count",
    "lock_monitor_locks_without_ttl",
    "lock_monitor_oldest_lock_age_seconds",
)
FAST = ("--interval", "0.2", "--redis-timeout", "1")


def test_metrics_pages_and_logs(redis_srv: RedisServer) -> None:
    client = redis_srv.client()
    mixed_locks(client, stuck=3, fresh=4, no_ttl=2)
    client.set("unrelated", "x")
    with running_monitor("--redis-url", redis_srv.url, *FAST) as monitor:
        wait_for(lambda: monitor.value("active_locks_count") == 9, what="9 active locks")
        assert monitor.value("stuck_locks_count") == 3
        assert monitor.value("lock_monitor_locks_without_ttl") == 2
        assert monitor.value("lock_monitor_redis_up") == 1
        assert monitor.value("lock_monitor_keys_scanned") == 9
        assert monitor.value("lock_monitor_oldest_lock_age_seconds") >= 90
        assert time.time() - monitor.value("lock_monitor_last_check_timestamp") < 5
        assert monitor.value("lock_monitor_scans_total", result="success") >= 1
        assert monitor.get("/readyz")[0] == 200

        locks = json.loads(monitor.get("/locks")[1])
        oldest = locks["locks"]
        stuck = {lock["key"]: lock for lock in oldest[:3]}
        assert set(stuck) == {f"lock:appointment:s{i}" for i in range(3)}
        for key, lock in stuck.items():
            assert lock["stuck"] is True
            assert lock["value"].endswith(f":worker-{key[-1]}")
        page = monitor.get("/")[1]
        assert "lock:appointment:s0" in page
        assert redis_srv.url in page

        client.delete("lock:appointment:s0")
        wait_for(lambda: monitor.value("stuck_locks_count") == 2, what="a stuck lock cleared")
    events = monitor.events()
    names = [e["event"] for e in events]
    assert names[0] == "starting"
    assert {"serving", "redis_connected", "lock_stuck", "stuck_lock_cleared", "stopped"} <= set(
        names
    )
    cleared = next(e for e in events if e["event"] == "stuck_lock_cleared")
    assert cleared["key"] == "lock:appointment:s0"


def test_redis_down_at_start_then_up(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")  # not started yet
    with running_monitor("--redis-url", server.url, *FAST) as monitor:
        wait_for(lambda: monitor.value("lock_monitor_redis_up") == 0, what="redis_up 0")
        metrics = monitor.metrics()
        assert not set(LOCK_GAUGES) & set(metrics)
        assert "lock_monitor_last_check_timestamp" not in metrics
        assert monitor.get("/healthz")[0] == 200
        status, reason = monitor.get("/readyz")
        assert status == 503
        assert "no successful pass yet" in reason
        server.start()
        try:
            mixed_locks(server.client(), stuck=1, fresh=1)
            wait_for(
                lambda: monitor.value("active_locks_count") == 2,
                timeout=20,
                what="recovery after Redis came up",
            )
            assert monitor.value("lock_monitor_redis_up") == 1
            assert monitor.get("/readyz")[0] == 200
        finally:
            server.stop()


def test_redis_killed_and_restarted_while_running(redis_srv: RedisServer) -> None:
    mixed_locks(redis_srv.client(), stuck=2, fresh=1)
    with running_monitor("--redis-url", redis_srv.url, *FAST) as monitor:
        wait_for(lambda: monitor.value("stuck_locks_count") == 2, what="2 stuck locks")
        last_good = monitor.value("lock_monitor_last_check_timestamp")
        redis_srv.stop()
        wait_for(lambda: monitor.value("lock_monitor_redis_up") == 0, what="redis_up 0")
        metrics = monitor.metrics()
        assert not set(LOCK_GAUGES) & set(metrics)  # absent, not 0
        kept = metrics["lock_monitor_last_check_timestamp"][0].value
        assert kept >= last_good
        assert monitor.value("lock_monitor_scans_total", result="error") >= 1
        assert monitor.get("/healthz")[0] == 200

        redis_srv.start()  # same port, empty (no persistence): the locks are gone
        mixed_locks(redis_srv.client(), stuck=1, fresh=0)
        wait_for(
            lambda: monitor.value("lock_monitor_redis_up") == 1,
            timeout=20,
            what="recovery after restart",
        )
        wait_for(lambda: monitor.value("stuck_locks_count") == 1, what="counts after restart")
    names = [e["event"] for e in monitor.events()]
    assert names.count("redis_lost") == 1
    assert names.count("redis_recovered") == 1
    assert monitor.process is not None
    assert monitor.process.returncode == 0


def test_a_hung_redis_times_out_and_recovers(redis_srv: RedisServer) -> None:
    mixed_locks(redis_srv.client(), stuck=0, fresh=3)
    with running_monitor(
        "--redis-url", redis_srv.url, "--interval", "0.2", "--redis-timeout", "0.5"
    ) as monitor:
        wait_for(lambda: monitor.value("active_locks_count") == 3, what="3 locks")
        assert redis_srv.process is not None
        os.kill(redis_srv.process.pid, signal.SIGSTOP)  # accepts connections, never answers
        try:
            wait_for(lambda: monitor.value("lock_monitor_redis_up") == 0, what="timeout noticed")
            assert monitor.value("active_locks_count") is None
            assert monitor.get("/healthz")[0] == 200  # the loop is alive, not hung
        finally:
            os.kill(redis_srv.process.pid, signal.SIGCONT)
        wait_for(lambda: monitor.value("active_locks_count") == 3, timeout=20, what="recovery")
    errors = [e for e in monitor.events() if e["event"] == "redis_lost"]
    assert "Timeout" in str(errors[0]["error"])


def test_wrong_password_never_leaks(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", None, "--requirepass", "right-horse-battery").start()
    try:
        env = monitor_env(REDIS_PASSWORD="wrong-staple-secret")
        monitor = MonitorProcess("--redis-url", server.url, *FAST, env=env).start()
        try:
            wait_for(lambda: monitor.value("lock_monitor_redis_up") == 0, what="auth refused")
            wait_for(
                lambda: monitor.value("lock_monitor_scans_total", result="error") >= 2,
                what="retries",
            )
            pages = [monitor.get(p)[1] for p in ("/", "/locks", "/metrics", "/readyz")]
        finally:
            monitor.stop()
    finally:
        server.stop()
    assert "invalid" in pages[1].lower() or "WRONGPASS" in pages[1]
    for text in [*pages, *monitor.log_lines]:
        assert "wrong-staple-secret" not in text
    starting = next(e for e in monitor.events() if e["event"] == "starting")
    assert starting["redis"]["password"] == "<set>"  # type: ignore[index]


def test_password_from_a_file_and_the_documented_minimal_acl_user(
    redis_srv: RedisServer, tmp_path: Path
) -> None:
    documented = section(CONFIGURATION_DOC, "A minimal Redis user")
    [acl_line] = [
        line for line in documented.splitlines() if line.startswith("ACL SETUSER lockmon")
    ]
    command = acl_line.replace(">CHANGE-ME", ">mon-pw-1234").split()
    admin = redis_srv.client()
    admin.execute_command(*command)
    mixed_locks(admin, stuck=2, fresh=3, no_ttl=1)
    admin.hset("lock:appointment:redisson", "uuid:1", 1)
    secret = tmp_path / "password"
    secret.write_text("mon-pw-1234\n")  # as a mounted Secret may end
    with running_monitor(
        "--redis-url",
        redis_srv.url,
        "--redis-username",
        "lockmon",
        "--redis-password-file",
        str(secret),
        "--pattern",
        "lock:appointment:*",
        *FAST,
    ) as monitor:
        wait_for(lambda: monitor.value("active_locks_count") == 7, what="7 locks via the ACL user")
        assert monitor.value("stuck_locks_count") == 2
        assert monitor.value("lock_monitor_redis_up") == 1
    assert all("mon-pw-1234" not in line for line in monitor.log_lines)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_it_within_two_seconds(redis_srv: RedisServer, sig: int) -> None:
    monitor = MonitorProcess("--redis-url", redis_srv.url, *FAST).start()
    wait_for(lambda: monitor.value("lock_monitor_redis_up") == 1, what="a first pass")
    started = time.monotonic()
    code = monitor.stop(sig)
    assert time.monotonic() - started < 2.0
    assert code == 0
    assert monitor.events()[-1]["event"] == "stopped"


def test_port_in_use_is_a_one_line_error(redis_srv: RedisServer) -> None:
    with running_monitor("--redis-url", redis_srv.url, *FAST) as first:
        args = ["run", "--listen-address", "127.0.0.1", "--port", str(first.port)]
        result = subprocess.run(
            monitor_command(*args, "--redis-url", redis_srv.url),
            env=monitor_env(),
            capture_output=True,
            text=True,
            timeout=20,
        )
    assert result.returncode == 1
    last = result.stderr.splitlines(keepends=True)[-1]
    assert re.fullmatch(r"lock-monitor: error: cannot listen on 127\.0\.0\.1:\d+: .+\n", last)
    assert last.endswith("; choose another port with --port or LOCK_MONITOR_PORT\n")
    assert "Traceback" not in result.stderr


def test_the_listen_address_may_carry_the_port(redis_srv: RedisServer) -> None:
    """HOST:PORT, as other exporters' --web.listen-address takes it, serves on that port."""
    monitor = MonitorProcess()
    monitor.args = ["run", "--listen-address", f"127.0.0.1:{monitor.port}"]
    monitor.args += ["--redis-url", redis_srv.url, *FAST]
    monitor.start()  # polls /healthz on monitor.port
    assert monitor.stop() == 0
