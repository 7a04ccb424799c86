"""`make bench`: how much the exporter costs, against a real Redis with 1,000,000 other keys.

Measures in one run, growing the locks from 10,000 to 100,000 to 1,000,000, and prints a
table against the targets:
(a) a bare SCAN MATCH pass with redis-py, the floor no lock monitor can beat;
(b) the exporter's full pass, as a ratio to (a) measured just before it (pairs interleaved),
    for timestamp and token values, with none and with all of them stuck; and its first pass,
    which knows no lock yet and reads every value (shown, no target);
(c) /metrics latency while passes run back to back, at 10,000 and at 1,000,000 locks;
(d) peak RSS of the daemon with every lock stuck and token values (the most to remember);
(e) the share of Redis' own time the daemon takes at its default settings;
(f) `lock-monitor locks` (table and --json) at 1,000,000 locks: peak RSS, and wall time as
    a ratio to (a).
Exits 1 when a target is missed. Absolute times vary between machines; compare the ratios.
"""

from __future__ import annotations

import contextlib
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
from typing import IO, NamedTuple, TypeVar

import redis
from prometheus_client.parser import text_string_to_metric_families

from lock_monitor.config import RedisSettings, ScanSettings
from lock_monitor.connection import Target, connect
from lock_monitor.demo.redis_server import RedisProcess, find_redis_server, free_port
from lock_monitor.passes import read_pass
from lock_monitor.stuck_log import StuckMemory
from lock_monitor.tracker import LockTracker

ROOT = Path(__file__).resolve().parent.parent
OTHER_KEYS = 1_000_000
PATTERN = "lock:appointment:*"
COUNT = ScanSettings.count
# (locks, passes of (a) and (b) each, interleaved, per value kind and stuck case, target ratio)
SIZES = ((10_000, 7, 1.15), (100_000, 7, 1.25), (1_000_000, 5, 1.6))
RSS_TARGETS = {100_000: 60.0, 1_000_000: 250.0}  # MB, the daemon with every lock stuck
LOCKS_RSS_TARGET = 120.0  # MB, `lock-monitor locks` at 1,000,000 locks
SCRAPES = 500
SCRAPE_GAP = 0.01  # seconds between scrapes, so they spread over several passes
LOAD_WINDOW = 60.0  # seconds over which (e) is measured
BATCH = 10_000  # keys per pipelined MSET / SET batch while filling
MONITOR_COMMANDS = ("scan", "getrange", "pttl", "type", "exists", "time")
FRESH, STUCK = 1e9, 0.0  # stuck thresholds: nothing is stuck, or everything (after a pass)
T = TypeVar("T")
Row = tuple[str, str, str, str]


def fill(
    client: redis.Redis,
    other: tuple[int, int],
    locks: tuple[int, int],
    age: float = 0,
    tokens: bool = False,
) -> None:
    """Write keys fast: MSET batches for the others, pipelined SET PX for the locks, whose
    values are `<epoch-ms>:<holder>` taken `age` seconds ago, or opaque tokens."""
    for start in range(*other, BATCH):
        client.mset({f"other:{i}": "x" for i in range(start, min(start + BATCH, other[1]))})
    stamp = f"{int((time.time() - age) * 1000)}:bench"
    for start in range(*locks, BATCH):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + BATCH, locks[1])):
            value = f"{i:08x}-5b1c-4d2e-9f3a-{i:012x}" if tokens else stamp
            pipe.set(f"lock:appointment:{i}", value, px=3_600_000)
        pipe.execute()


def bare_scan(client: redis.Redis) -> float:
    started = time.perf_counter()
    cursor = 0
    while True:
        cursor, _ = client.scan(cursor, match=PATTERN, count=COUNT)
        if cursor == 0:
            break
    return time.perf_counter() - started


def ratios(
    client: redis.Redis, url: str, locks: int, runs: int, threshold: float
) -> tuple[list[float], list[float], float]:
    """(b) / (a) pass by pass, and (a): the daemon's pass (`read_pass` on a connection and a
    tracker kept between passes, as in its loop) timed right after a bare SCAN; and the
    ratio of the first pass, which knows no lock and reads every value."""
    scan = ScanSettings(pattern=PATTERN, stuck_threshold=threshold)
    target: Target = connect(RedisSettings(url=url))
    tracker, memory = LockTracker(threshold), StuckMemory()
    floor = bare_scan(client)
    first = read_pass(target, scan, tracker, memory)
    memory = first.stuck.remembered
    result, floors = [], []
    for _ in range(runs):
        floors.append(bare_scan(client))
        outcome = read_pass(target, scan, tracker, memory)
        memory = outcome.stuck.remembered
        snapshot = outcome.snapshot
        assert snapshot.active == locks, snapshot.active
        assert snapshot.stuck == (0 if threshold == FRESH else locks), snapshot.stuck
        result.append(snapshot.duration_seconds / floors[-1])
    target.close()
    return result, floors, first.snapshot.duration_seconds / floor


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


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

    def wait_for_passes(self, count: int, timeout: float = 300.0) -> dict[str, float]:
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
        return peak_rss_mb(self.process.pid)

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


class Scrapes(NamedTuple):
    """/metrics latencies in ms over a run of scrapes, and the share of the time passes ran."""

    total: int
    p50: float
    p99: float
    max: float
    duty: float


def scrape_latency(daemon: Daemon) -> Scrapes:
    """/metrics while passes run back to back: at least SCRAPES scrapes, over at least two
    whole passes."""
    before = daemon.wait_for_passes(1)["lock_monitor_scans_total/success"]
    url = f"http://127.0.0.1:{daemon.port}/metrics"
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < SCRAPES or daemon.passes() < before + 2:
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=5) as response:
            response.read()
        times.append((time.perf_counter() - t0) * 1000)
        time.sleep(SCRAPE_GAP)
    elapsed = time.perf_counter() - started
    after = daemon.metrics()
    passes = after["lock_monitor_scans_total/success"] - before
    duty = min(1.0, passes * after["lock_monitor_scan_duration_seconds"] / elapsed)
    return Scrapes(len(times), percentile(times, 0.5), percentile(times, 0.99), max(times), duty)


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


def locks_command(url: str, *args: str) -> tuple[float, float]:
    """`lock-monitor locks` once: wall seconds, and its peak RSS in MB (VmHWM, read every
    10 ms until it exits: its rusage would count the memory of this process, which forked it)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "lock_monitor", "locks", "--redis-url", url, *args]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    peak = 0.0
    while process.poll() is None:
        with contextlib.suppress(OSError, StopIteration):  # it exited between poll and read
            peak = max(peak, peak_rss_mb(process.pid))
        time.sleep(0.01)
    wall = time.perf_counter() - started
    assert process.returncode in (0, 3, 4), process.returncode  # 3: stuck, 4: ages unknown
    return wall, peak


def row(name: str, value: str, target: str, ok: bool | None) -> Row:
    return name, value, target, "" if ok is None else ("ok" if ok else "MISSED")


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def pass_rows(
    client: redis.Redis, url: str, locks: int, runs: int, limit: float, kind: str
) -> list[Row]:
    """(a) and (b) for the value kind the locks hold now, with none and with all stuck."""
    rows = []
    for stuck, threshold in (("none", FRESH), ("all", STUCK)):
        measured, floors, first = ratios(client, url, locks, runs, threshold)
        rows.append(
            row(
                f"(b)/(a) {locks:,} locks, {kind}, {stuck} stuck, median (range) of {runs}",
                f"{spread(measured)}, (a) {statistics.median(floors):.2f} s, first {first:.2f}",
                f"<= {limit}",
                statistics.median(measured) <= limit,
            )
        )
        print(*rows[-1], flush=True)
    return rows


def daemon_rss(url: str, locks: int) -> Row:
    """(d): the daemon's peak RSS over three passes, every lock stuck (token values)."""

    def peak(daemon: Daemon) -> tuple[float, dict[str, float]]:
        metrics = daemon.wait_for_passes(3)
        return daemon.peak_rss_mb(), metrics

    args = ["--interval", "0.5", "--max-redis-load", "1", "--stuck-threshold", "0"]
    rss, metrics = with_daemon(url, args, peak)
    counted = int(metrics["active_locks_count"]), int(metrics["stuck_locks_count"])
    return row(
        f"(d) daemon peak RSS, {counted[0]:,} locks ({counted[1]:,} stuck, tokens)",
        f"{rss:.1f} MB",
        f"<= {RSS_TARGETS[locks]:.0f} MB",
        rss <= RSS_TARGETS[locks] and counted == (locks, locks),
    )


def share_rows(client: redis.Redis, url: str) -> list[Row]:
    """(e) at the defaults (`--interval 5 --max-redis-load 0.05`)."""
    share, window, after = with_daemon(url, [], lambda daemon: redis_share(client, daemon))
    delay, active = (
        after["lock_monitor_next_pass_delay_seconds"],
        after["lock_monitor_pacing_active"],
    )
    return [
        row(
            f"(e) Redis time taken, defaults, {window:.0f}s window",
            f"{share * 100:.2f} %",
            "<= 5 %",
            share <= 0.05,
        ),
        row("    pacing: wait after a pass", f"{delay:.1f} s (active {active:.0f})", "", None),
    ]


def scrape_rows(url: str, locks: int) -> list[Row]:
    fast = ["--interval", "0.05", "--max-redis-load", "1"]
    scrapes = with_daemon(url, fast, scrape_latency)
    return [
        row(
            f"(c) /metrics p50, {scrapes.total} scrapes, {locks:,} locks",
            f"{scrapes.p50:.2f} ms",
            "",
            None,
        ),
        row(
            f"    p99, passes running {scrapes.duty:.0%} of the time",
            f"{scrapes.p99:.2f} ms",
            "<= 10 ms",
            scrapes.p99 <= 10,
        ),
    ]


def locks_rows(client: redis.Redis, url: str) -> list[Row]:
    """(f) at 1,000,000 locks: each run of the command right after a bare SCAN."""
    rows = []
    for name, args in (("table", ()), ("--json", ("--json",))):
        floor = bare_scan(client)
        wall, rss = locks_command(url, *args)
        rows.append(
            row(
                f"(f) `locks` {name}, peak RSS",
                f"{rss:.1f} MB",
                f"<= {LOCKS_RSS_TARGET:.0f} MB",
                rss <= LOCKS_RSS_TARGET,
            )
        )
        rows.append(
            row(
                f"    wall / (a) ({wall:.2f} s / {floor:.2f} s)",
                f"{wall / floor:.2f}",
                "<= 1.6",
                wall / floor <= 1.6,
            )
        )
    wall, rss = locks_command(url, "--all")
    rows.append(
        row(
            "    `locks --all` (1,000,000 JSON lines): wall, peak RSS",
            f"{wall:.2f} s, {rss:.1f} MB",
            "",
            None,
        )
    )
    return rows


def main() -> int:
    binary = find_redis_server()
    rows: list[Row] = []
    started = time.monotonic()
    with RedisProcess(binary) as server, server.client() as client:
        url = server.url
        fill(client, (0, OTHER_KEYS), (0, 0))
        present, tokens = 0, False  # the locks held, and whether their values are tokens
        for locks, runs, limit in SIZES:
            fill(client, (0, 0), (present, locks), age=60, tokens=tokens)
            present = locks
            print(f"{client.dbsize():,} keys, {locks:,} locks", flush=True)
            for switch in (False, True):  # the value kind they hold, then the other
                if switch:
                    tokens = not tokens
                    fill(client, (0, 0), (0, locks), age=60, tokens=tokens)
                if tokens and locks in RSS_TARGETS:
                    rows.append(daemon_rss(url, locks))
                    print(*rows[-1], flush=True)
                kind = "tokens" if tokens else "timestamps"
                rows += pass_rows(client, url, locks, runs, limit, kind)
            if locks == SIZES[0][0]:
                rows += share_rows(client, url)
                rows += scrape_rows(url, locks)
        rows += scrape_rows(url, present)
        rows += locks_rows(client, url)

    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print(f"\n{time.monotonic() - started:.0f} s in all")
    for r in [("measure", "value", "target", ""), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)))
    return 0 if all(r[3] != "MISSED" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
