"""`make bench`: how much the exporter costs, against a real Redis with 1,000,000 keys.

Measures in one run and prints a table against the targets:
(a) a bare SCAN MATCH pass with redis-py, the floor no lock monitor can beat;
(b) the exporter's full pass, and b / a;
(c) /metrics latency while passes run back to back;
(d) peak RSS of the daemon holding 100,000 live locks;
(e) the share of Redis' own time the daemon takes at its default settings.
Exits 1 when a target is missed. Absolute times vary between machines; compare the ratios.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

import redis
from prometheus_client.parser import text_string_to_metric_families

from lock_monitor.config import RedisSettings, ScanSettings
from lock_monitor.connection import Target, connect
from lock_monitor.demo.redis_server import RedisProcess, find_redis_server, free_port
from lock_monitor.locks import LockTracker
from lock_monitor.passes import read_pass

ROOT = Path(__file__).resolve().parent.parent
OTHER_KEYS = 1_000_000
LOCKS = 10_000
RSS_LOCKS = 100_000
PATTERN = "lock:appointment:*"
COUNT = ScanSettings.count
RUNS = 7  # passes of (a) and (b) each, interleaved; medians are compared
SCRAPES = 500
SCRAPE_GAP = 0.01  # seconds between scrapes, so they spread over several passes
LOAD_WINDOW = 60.0  # seconds over which (e) is measured
BATCH = 10_000  # keys per pipelined MSET / SET batch while filling
MONITOR_COMMANDS = ("scan", "mget", "pttl", "type", "time")
T = TypeVar("T")


def fill(
    client: redis.Redis, other: tuple[int, int], locks: tuple[int, int], age: float = 0
) -> None:
    """Write keys fast: MSET batches for the others, pipelined SET PX for the locks, which
    were taken `age` seconds ago by the timestamp in their value."""
    for start in range(*other, BATCH):
        client.mset({f"other:{i}": "x" for i in range(start, min(start + BATCH, other[1]))})
    stamp = f"{int((time.time() - age) * 1000)}:bench"
    for start in range(*locks, BATCH):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + BATCH, locks[1])):
            pipe.set(f"lock:appointment:{i}", stamp, px=3_600_000)
        pipe.execute()


def bare_scan(client: redis.Redis) -> float:
    started = time.perf_counter()
    cursor, found = 0, 0
    while True:
        cursor, keys = client.scan(cursor, match=PATTERN, count=COUNT)
        found += len(keys)
        if cursor == 0:
            break
    assert found >= LOCKS, found
    return time.perf_counter() - started


def exporter_pass(target: Target, scan: ScanSettings, tracker: LockTracker) -> float:
    """The daemon's pass (`read_pass`, on a connection kept between passes), without its loop."""
    snapshot = read_pass(target, scan, tracker, {}).snapshot
    assert snapshot.active == LOCKS, snapshot.active
    return snapshot.duration_seconds


class Daemon:
    """`lock-monitor run` as its own process, as in production."""

    def __init__(self, redis_url: str, log: IO[bytes], *args: str) -> None:
        self.port = free_port()
        self.log = log
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "lock_monitor", "run", "--redis-url", redis_url]
        command += ["--listen-address", "127.0.0.1", "--port", str(self.port)]
        command += ["--log-format", "json", "--log-level", "warning", *args]
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=self.log
        )

    def metrics(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return {
            s.name
            + "".join(f"/{v}" for v in s.labels.values() if s.name.startswith("lock_")): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def passes(self) -> float:
        return self.metrics().get("lock_monitor_scans_total/success", 0.0)

    def wait_for_passes(self, count: int, timeout: float = 120.0) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"daemon exited: {self.log.read().decode()[-2000:]}")
            try:
                if self.passes() >= count:
                    return self.metrics()
            except OSError:
                pass  # not listening yet
            time.sleep(0.1)
        raise RuntimeError(f"no {count} passes within {timeout}s")

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def with_daemon(redis_url: str, args: list[str], body: Callable[[Daemon], T]) -> T:
    with tempfile.TemporaryFile() as log:
        daemon = Daemon(redis_url, log, *args)
        try:
            return body(daemon)
        finally:
            daemon.stop()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def scrape_latency(daemon: Daemon) -> tuple[float, float, float]:
    """p50 and p99 of /metrics in ms while passes run back to back, and the passes' duty."""
    before = daemon.wait_for_passes(1)
    url = f"http://127.0.0.1:{daemon.port}/metrics"
    times: list[float] = []
    started = time.perf_counter()
    for _ in range(SCRAPES):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=5) as response:
            response.read()
        times.append((time.perf_counter() - t0) * 1000)
        time.sleep(SCRAPE_GAP)
    elapsed = time.perf_counter() - started
    after = daemon.metrics()
    passes = after["lock_monitor_scans_total/success"] - before["lock_monitor_scans_total/success"]
    duty = min(1.0, passes * after["lock_monitor_scan_duration_seconds"] / elapsed)
    return percentile(times, 0.5), percentile(times, 0.99), duty


def redis_share(client: redis.Redis, daemon: Daemon) -> tuple[float, float, dict[str, float]]:
    """Redis' usec in the monitor's commands over wall time, after the first pass."""
    daemon.wait_for_passes(1)
    client.config_resetstat()
    started = time.monotonic()
    time.sleep(LOAD_WINDOW)  # the measurement window: the daemon runs, the bench stays idle
    stats = client.info("commandstats")
    elapsed = time.monotonic() - started
    usec = sum(stats.get(f"cmdstat_{name}", {}).get("usec", 0) for name in MONITOR_COMMANDS)
    return usec / 1e6 / elapsed, elapsed, daemon.metrics()


def row(name: str, value: str, target: str, ok: bool | None) -> tuple[str, str, str, str]:
    return name, value, target, "" if ok is None else ("ok" if ok else "MISSED")


def main() -> int:
    binary = find_redis_server()
    rows: list[tuple[str, str, str, str]] = []
    with RedisProcess(binary) as server, server.client() as client:
        t0 = time.perf_counter()
        fill(client, (0, OTHER_KEYS), (0, LOCKS))
        print(f"filled {client.dbsize():,} keys in {time.perf_counter() - t0:.1f}s", flush=True)
        scan = ScanSettings(pattern=PATTERN)
        target, tracker = connect(RedisSettings(url=server.url)), LockTracker(scan.stuck_threshold)
        bare, full = [], []
        for _ in range(RUNS):
            bare.append(bare_scan(client))
            full.append(exporter_pass(target, scan, tracker))
        a, b = statistics.median(bare), statistics.median(full)
        rows.append(row(f"(a) bare SCAN MATCH pass, COUNT {COUNT}", f"{a:.3f} s", "", None))
        rows.append(row("(b) exporter pass (read_pass)", f"{b:.3f} s", "", None))
        rows.append(row("    b / a", f"{b / a:.2f}", "<= 1.15", b / a <= 1.15))
        print("(a), (b) done", flush=True)

        share, window, after = with_daemon(
            server.url, [], lambda daemon: redis_share(client, daemon)
        )
        rows.append(
            row(
                f"(e) Redis time taken, defaults, {window:.0f}s window",
                f"{share * 100:.2f} %",
                "<= 5 %",
                share <= 0.05,
            )
        )
        rows.append(
            row(
                "    pacing: wait after a pass",
                f"{after['lock_monitor_next_pass_delay_seconds']:.1f} s"
                f" (active {after['lock_monitor_pacing_active']:.0f})",
                "",
                None,
            )
        )
        print("(e) done", flush=True)

        fast = ["--interval", "0.05", "--max-redis-load", "1"]
        p50, p99, duty = with_daemon(server.url, fast, scrape_latency)
        rows.append(row(f"(c) /metrics p50, {SCRAPES} scrapes", f"{p50:.2f} ms", "", None))
        rows.append(
            row(
                f"    p99, passes running {duty:.0%} of the time",
                f"{p99:.2f} ms",
                "<= 10 ms",
                p99 <= 10,
            )
        )
        print("(c) done", flush=True)

        fill(client, (0, 0), (LOCKS, RSS_LOCKS), age=60)  # all stuck: the most to remember

        def peak(daemon: Daemon) -> tuple[float, dict[str, float]]:
            metrics = daemon.wait_for_passes(3)
            return daemon.peak_rss_mb(), metrics

        rss, metrics = with_daemon(server.url, ["--interval", "0.5", "--max-redis-load", "1"], peak)
        locks = int(metrics["active_locks_count"])
        stuck = int(metrics["stuck_locks_count"])
        rows.append(
            row(
                f"(d) daemon peak RSS, {locks:,} locks ({stuck:,} stuck)",
                f"{rss:.1f} MB",
                "<= 80 MB",
                rss <= 80 and locks == RSS_LOCKS,
            )
        )

    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print()
    for r in [("measure", "value", "target", ""), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)))
    return 0 if all(r[3] != "MISSED" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
