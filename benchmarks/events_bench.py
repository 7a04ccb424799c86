"""`make bench`, keyspace events: keeping up, freshness and memory, against a real Redis.

Measures in one run and prints a table against the targets:
(f) 20,000 lock events/s for a minute (5,000 locks/s, each SET PX NX, PEXPIRE and DEL: 4
    events), from a separate process: events received against sent, the backlog (a probe lock
    without TTL, timed from its SET until /metrics counts it, and from its DEL until it is
    gone), Redis' output buffer for the subscriber, and the exporter's CPU per 1,000 events;
(g) freshness with 1,000,000 other keys and passes paced by --max-redis-load: a lock that
    becomes stuck shows in stuck_locks_count, and a released one leaves active_locks_count;
(h) peak RSS of the daemon holding 100,000 live locks, with --events off and on.
Exits 1 when a target is missed.
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import Daemon, fill, row, with_daemon  # the sibling benchmark

from lock_monitor.demo.redis_server import RedisProcess, find_redis_server

NOTIFY = ("--notify-keyspace-events", "Kg$xeh")
RATE = 5_000  # lock cycles per second: SET PX NX (set + expire), PEXPIRE, DEL = 4 events
EVENTS_PER_CYCLE = 4
DURATION = 60.0
TICK = 0.01  # the load generator sends one pipeline per tick
PROBE = "lock:appointment:probe"
OTHER_KEYS = 1_000_000
FRESH_LOCKS = 10_000
FRESH_TRIES = 5
FRESH_THRESHOLD = 3.0  # --stuck-threshold for (g): short, so each try takes seconds
LIVE_LOCKS = 100_000
POLL = 0.01


def load(url: str, rate: int, duration: float, sent: Any, took: Any) -> None:
    """The lock traffic, in its own process: `rate` cycles a second, paced per tick; it
    reports the events it caused and the seconds it took."""
    client = redis.Redis.from_url(url)
    per_tick = int(rate * TICK)
    started = time.monotonic()
    tick, cycle = 0, 0
    while (now := time.monotonic()) - started < duration:
        due = started + tick * TICK
        if now < due:
            time.sleep(due - now)
        pipe = client.pipeline(transaction=False)
        for _ in range(per_tick):
            key = f"lock:appointment:load-{cycle % 50_000}"
            pipe.set(key, "1764180000000:bench", px=30_000, nx=True)
            pipe.pexpire(key, 30_000)
            pipe.delete(key)
            cycle += 1
        pipe.execute()
        tick += 1
    sent.value = cycle * EVENTS_PER_CYCLE
    took.value = time.monotonic() - started


def cpu_seconds(daemon: Daemon) -> float:
    fields = Path(f"/proc/{daemon.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


def wait_until(check: Callable[[], bool], timeout: float) -> float:
    """Seconds until `check` holds, polled every POLL."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise RuntimeError("timed out")
        time.sleep(POLL)
    return time.monotonic() - started


def events_live(daemon: Daemon) -> None:
    """Subscribed, and a pass has reconciled the live set since: the gauges are live."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if daemon.metrics().get("lock_monitor_events_up") == 1 and daemon.passes() >= 2:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("events did not come up")


def throughput(client: redis.Redis, url: str, daemon: Daemon) -> dict[str, float]:
    events_live(daemon)
    before = daemon.metrics()
    cpu0 = cpu_seconds(daemon)
    sent, took = multiprocessing.Value("q", 0), multiprocessing.Value("d", 0.0)
    generator = multiprocessing.Process(target=load, args=(url, RATE, DURATION, sent, took))
    started = time.monotonic()
    generator.start()
    lags: list[float] = []
    buffers: list[int] = []
    while generator.is_alive():
        client.set(PROBE, "probe")  # no TTL: the only lock without one
        lags.append(wait_until(lambda: daemon.metrics()["lock_monitor_locks_without_ttl"] == 1, 30))
        client.delete(PROBE)
        lags.append(wait_until(lambda: daemon.metrics()["lock_monitor_locks_without_ttl"] == 0, 30))
        buffers += [int(c["omem"]) for c in client.client_list(_type="pubsub") if "omem" in c]
        time.sleep(0.5)
    generator.join()
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(daemon) - cpu0
    time.sleep(1)  # the last events are on their way
    after = daemon.metrics()
    probes = len(lags)  # each probe: its set, then its del
    received = (
        after["lock_monitor_events_received_total"] - before["lock_monitor_events_received_total"]
    )
    return {
        "sent": float(sent.value),
        "received": received - probes,
        "rate": sent.value / took.value,
        "lag_p50": statistics.median(lags),
        "lag_max": max(lags),
        "omem_max": float(max(buffers, default=0)),
        "cpu_per_1000": cpu / received * 1000 if received else float("nan"),
        "cpu_share": cpu / elapsed,
        "corrections": after["lock_monitor_reconcile_corrections_total"],
        "reconnects": after["lock_monitor_events_reconnects_total"],
    }


def freshness(client: redis.Redis, daemon: Daemon) -> dict[str, float]:
    events_live(daemon)
    stuck_after, released_after = [], []
    for i in range(FRESH_TRIES):
        key = f"lock:appointment:fresh-{i}"
        stuck, active = (
            daemon.metrics()[name] for name in ("stuck_locks_count", "active_locks_count")
        )
        client.set(key, f"{int(time.time() * 1000)}:bench", px=600_000, nx=True)
        taken = time.monotonic()
        wait_until(lambda s=stuck: daemon.metrics()["stuck_locks_count"] > s, 60)
        stuck_after.append(time.monotonic() - taken - FRESH_THRESHOLD)
        client.delete(key)
        released_after.append(
            wait_until(lambda a=active: daemon.metrics()["active_locks_count"] == a, 60)
        )
    metrics = daemon.metrics()
    return {
        "stuck_max": max(stuck_after),
        "released_max": max(released_after),
        "delay": metrics["lock_monitor_next_pass_delay_seconds"],
        "pass": metrics["lock_monitor_scan_duration_seconds"],
    }


def peak(daemon: Daemon) -> tuple[float, dict[str, float]]:
    metrics = daemon.wait_for_passes(3)
    return daemon.peak_rss_mb(), metrics


def main() -> int:
    binary = find_redis_server()
    rows: list[tuple[str, str, str, str]] = []
    with RedisProcess(binary, *NOTIFY) as server, server.client() as client:
        f = with_daemon(server.url, ["--events", "on"], lambda d: throughput(client, server.url, d))
        rows.append(row("(f) lock events sent / s", f"{f['rate']:,.0f}", ">= 20,000", None))
        rows.append(
            row(
                "    received of sent",
                f"{f['received']:,.0f} of {f['sent']:,.0f}",
                "all",
                f["received"] == f["sent"] and f["rate"] >= 0.98 * RATE * EVENTS_PER_CYCLE,
            )
        )
        rows.append(
            row(
                "    probe: command to /metrics, p50 / max",
                f"{f['lag_p50'] * 1000:.0f} ms / {f['lag_max'] * 1000:.0f} ms",
                "max < 1 s",
                f["lag_max"] < 1,
            )
        )
        rows.append(
            row(
                "    Redis output buffer of the subscriber, max",
                f"{f['omem_max'] / 1024:.0f} KiB",
                "< 1 MB",
                f["omem_max"] < 1_000_000,
            )
        )
        rows.append(
            row(
                "    exporter CPU per 1,000 events",
                f"{f['cpu_per_1000'] * 1000:.1f} ms ({f['cpu_share']:.0%} of a core)",
                "",
                None,
            )
        )
        rows.append(
            row(
                "    reconnects, corrections",
                f"{f['reconnects']:.0f}, {f['corrections']:.0f}",
                "0, 0",
                f["reconnects"] == 0 and f["corrections"] == 0,
            )
        )
        print("(f) done", flush=True)

        t0 = time.perf_counter()
        client.flushall()
        fill(client, (0, OTHER_KEYS), (0, FRESH_LOCKS))
        print(f"filled {client.dbsize():,} keys in {time.perf_counter() - t0:.1f}s", flush=True)
        args = ["--events", "on", "--stuck-threshold", str(FRESH_THRESHOLD)]
        g = with_daemon(server.url, args, lambda d: freshness(client, d))
        rows.append(
            row(
                f"(g) stuck shows, {OTHER_KEYS:,} other keys, after the threshold (max)",
                f"{g['stuck_max']:.2f} s",
                "<= 1 s",
                g["stuck_max"] <= 1,
            )
        )
        rows.append(
            row(
                "    released lock leaves active_locks_count (max)",
                f"{g['released_max']:.2f} s",
                "<= 1 s",
                g["released_max"] <= 1,
            )
        )
        rows.append(
            row(
                "    passes meanwhile: duration, paced wait",
                f"{g['pass']:.2f} s, {g['delay']:.1f} s",
                "",
                None,
            )
        )
        print("(g) done", flush=True)

        client.flushall()
        fill(client, (0, 0), (0, LIVE_LOCKS))
        fast = ["--interval", "0.5", "--max-redis-load", "1"]
        off, _ = with_daemon(server.url, [*fast, "--events", "off"], peak)
        on, metrics = with_daemon(server.url, [*fast, "--events", "on"], peak)
        locks = int(metrics["active_locks_count"])
        rows.append(
            row(f"(h) peak RSS, {locks:,} live locks, events off", f"{off:.1f} MB", "", None)
        )
        rows.append(
            row(
                "    events on (the live set)",
                f"{on:.1f} MB (+{on - off:.1f} MB)",
                "",
                locks == LIVE_LOCKS and metrics.get("lock_monitor_events_up") == 1,
            )
        )

    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print()
    for r in [("measure", "value", "target", ""), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)))
    return 0 if all(r[3] != "MISSED" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
