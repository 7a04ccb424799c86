"""`make bench`'s (c) alone: /metrics latency while the daemon's passes run back to back.

Fills a redis-server of its own with 1,000,000 other keys and, in turn, each number of
locks asked for (`bench.fill`: timestamp values), runs `lock-monitor run --interval 0.05
--max-redis-load 1` against it and scrapes as `bench.py` does (at least 500 scrapes, over at
least two whole passes), `--runs` times per size. Prints p50 / p99 / max of the scrapes, the
pass time and the daemon's peak RSS; exits 1 when a p99 passes 10 ms.
`python benchmarks/scrape_bench.py [--locks 10000,1000000] [--runs 3]`
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import OTHER_KEYS, Daemon, Scrapes, fill, scrape_latency, with_daemon  # the sibling

from lock_monitor.demo.redis_server import RedisProcess, find_redis_server

FAST = ["--interval", "0.05", "--max-redis-load", "1"]
P99_TARGET_MS = 10.0


def measure(daemon: Daemon) -> tuple[Scrapes, float, float]:
    """The scrapes, then the last pass's duration and the daemon's peak RSS in MB."""
    scrapes = scrape_latency(daemon)
    return scrapes, daemon.metrics()["lock_monitor_scan_duration_seconds"], daemon.peak_rss_mb()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--locks", default="10000,1000000", help="comma-separated, growing")
    parser.add_argument("--runs", type=int, default=3, help="daemons measured per size")
    options = parser.parse_args()
    worst = 0.0
    with RedisProcess(find_redis_server()) as server, server.client() as client:
        fill(client, (0, OTHER_KEYS), (0, 0))
        present = 0
        for locks in (int(size) for size in options.locks.split(",")):
            fill(client, (0, 0), (present, locks), age=60)
            present = locks
            for _ in range(options.runs):
                scrapes, duration, rss = with_daemon(server.url, FAST, measure)
                worst = max(worst, scrapes.p99)
                print(
                    f"{locks:>9,} locks: {scrapes.total} scrapes, p50 {scrapes.p50:.2f} ms, "
                    f"p99 {scrapes.p99:.2f} ms, max {scrapes.max:.1f} ms; passes running "
                    f"{scrapes.duty:.0%} of the time, last pass {duration:.2f} s, "
                    f"peak RSS {rss:.1f} MB",
                    flush=True,
                )
    return 0 if worst <= P99_TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
