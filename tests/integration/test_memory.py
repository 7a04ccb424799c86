"""Memory that follows neither the size of lock values and keys nor, beyond a small bound per
lock, their number: hostile values against a running daemon, and a pass over many locks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis

from lock_monitor.locks import VALUE_DISPLAY_LIMIT
from tests.servers import RedisServer, monitor_env, redis_server, running_monitor, wait_for

HUGE = 50 * 1024 * 1024  # bytes per value: 10 such locks are 500 MB in Redis
MANY = 200_000
BYTES_PER_LOCK = 300  # the bound of a pass's growth in RSS for MANY token locks, all stuck


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmHWM:")).split()[1]) / 1024


def daemon_after_passes(server: RedisServer) -> tuple[float, dict[str, Any]]:
    """A daemon's peak RSS after three passes, and its /locks document."""
    args = ("--redis-url", server.url, "--interval", "0.2", "--max-redis-load", "1")
    with running_monitor(*args) as monitor:
        wait_for(
            lambda: (monitor.value("lock_monitor_scans_total", result="success") or 0) >= 3,
            what="three passes",
        )
        _, body = monitor.get("/locks")
        assert monitor.process is not None
        return peak_rss_mb(monitor.process.pid), json.loads(body)


def redis_peak_mb(client: redis.Redis) -> float:
    return int(client.info("memory")["used_memory_peak"]) / 2**20


def test_huge_values_and_long_keys_cost_the_daemon_and_redis_nothing(tmp_path: Path) -> None:
    with redis_server(tmp_path) as server:
        client = server.client()
        seconds, _ = client.time()
        keys = [f"lock:appointment:{i}" for i in range(10)] + ["lock:appointment:" + "k" * 100_000]
        for key in keys:
            client.set(key, f"{(seconds - 90) * 1000}:holder")
        small, _ = daemon_after_passes(server)

        for key in keys:
            client.setrange(key, HUGE - 1, "x")  # the same values, each now 50 MB long
        redis_before = redis_peak_mb(client)
        huge, document = daemon_after_passes(server)

        assert huge - small < 10, (small, huge)
        assert redis_peak_mb(client) - redis_before < 50  # no reply holds the values
        assert document["pass"]["active"] == len(keys)
        for lock in document["locks"]:
            assert lock["age_source"] == "value"
            assert lock["age_seconds"] >= 90
            assert lock["value"].startswith(f"{(seconds - 90) * 1000}:holder\x00")
            assert len(lock["value"]) == VALUE_DISPLAY_LIMIT + 1
            assert lock["value"].endswith("…")
        assert max(len(lock["key"]) for lock in document["locks"]) == VALUE_DISPLAY_LIMIT + 1


# Two passes in a process of their own, as the daemon makes them: its peak RSS over what it
# held before the first (tracemalloc would measure the same five times slower).
TWO_PASSES = """
import json, sys
from pathlib import Path
from lock_monitor.config import RedisSettings, ScanSettings
from lock_monitor.connection import connect
from lock_monitor.tracker import LockTracker
from lock_monitor.passes import read_pass
from lock_monitor.stuck_log import StuckMemory

def status(field):
    lines = Path("/proc/self/status").read_text().splitlines()
    return int(next(x for x in lines if x.startswith(field)).split()[1]) * 1024

before = status("VmRSS:")
target = connect(RedisSettings(url=sys.argv[1]))
scan = ScanSettings(stuck_threshold=0)
tracker = LockTracker(scan.stuck_threshold)
first = read_pass(target, scan, tracker, StuckMemory())
second = read_pass(target, scan, tracker, first.stuck.remembered)
snapshot = second.snapshot
print(json.dumps([snapshot.active, snapshot.stuck, status("VmHWM:") - before]))
"""


def test_a_pass_over_many_locks_stays_under_its_memory_bound(tmp_path: Path) -> None:
    """The worst case: token values (ages from first sightings) and every lock stuck, on the
    second pass, which holds what the first remembered while it builds its own."""
    with redis_server(tmp_path, "--enable-debug-command", "yes") as server:
        server.client().execute_command("DEBUG", "POPULATE", MANY, "lock:appointment")
        probe = subprocess.run(
            [sys.executable, "-c", TWO_PASSES, server.url],
            env=monitor_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert probe.returncode == 0, probe.stderr
    active, stuck, grown = json.loads(probe.stdout)
    assert (active, stuck) == (MANY, MANY)
    assert grown < MANY * BYTES_PER_LOCK, f"{grown / MANY:.0f} bytes per lock"
