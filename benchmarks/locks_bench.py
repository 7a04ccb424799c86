"""(f) of `make bench` alone, repeated: `lock-monitor locks` at 1,000,000 locks, and where its
wall time goes.

    flock /work/bench.lock .venv/bin/python benchmarks/locks_bench.py [--url URL] [--runs N]

Against its own `redis-server` (or the one at URL, filled first when its database is empty)
holding 1,000,000 other keys and 1,000,000 locks with token values, as `make bench` leaves
them, it times run after run a bare SCAN (the floor) then the command, for the table and
`--json`, and splits the wall time: the fixed cost (the command against an empty database:
starting Python, importing, connecting, printing, exiting), the pass itself (`read_redis` in
this process, on a fresh connection as the command reads), and what is left. Not part of
`make bench`, whose (f) measures the command once among everything else.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import redis
from bench import OTHER_KEYS, PATTERN, ROOT, bare_scan, fill, locks_command, spread

from lock_monitor.config import DEFAULT_LOCKS_LIMIT, RedisSettings, ScanSettings
from lock_monitor.demo.redis_server import RedisProcess, find_redis_server
from lock_monitor.triage import read_redis

LOCKS = 1_000_000
EMPTY_DB = 1  # the database the fixed cost is measured on


def wall(command: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    subprocess.run(command, env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def one_pass(url: str) -> float:
    started = time.perf_counter()
    result = read_redis(RedisSettings(url=url), ScanSettings(pattern=PATTERN), DEFAULT_LOCKS_LIMIT)
    assert result.snapshot.active == LOCKS, result.snapshot.active
    return time.perf_counter() - started


def ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    return [a / b for a, b in zip(numerators, denominators, strict=True)]


def measure(url: str, runs: int) -> None:
    client = redis.Redis.from_url(url)
    if client.dbsize() == 0:
        fill(client, (0, OTHER_KEYS), (0, LOCKS), age=60, tokens=True)
    print(f"{client.dbsize():,} keys, {runs} runs, load {os.getloadavg()[0]:.2f}", flush=True)
    python = [sys.executable, "-c", "pass"]
    print("python -c pass      ", spread([wall(python) for _ in range(runs)]), "s")
    empty = [sys.executable, "-m", "lock_monitor", "locks", "--redis-url"]
    empty.append(url.rpartition("/")[0] + f"/{EMPTY_DB}")
    fixed = [wall(empty) for _ in range(runs)]
    print("fixed (empty db)    ", spread(fixed), "s", flush=True)
    floors: list[float] = []
    passes: list[float] = []
    for _ in range(runs):
        floors.append(bare_scan(client))
        passes.append(one_pass(url))
    print("floor               ", spread(floors), "s")
    print("pass, in-process    ", spread(passes), "s, / floor", spread(ratios(passes, floors)))
    for name, args in (("table", ()), ("--json", ("--json",))):
        floors, walls, peaks = [], [], []
        for _ in range(runs):
            floors.append(bare_scan(client))
            seconds, peak = locks_command(url, *args)
            walls.append(seconds)
            peaks.append(peak)
        rest = statistics.median(walls) - statistics.median(fixed) - statistics.median(passes)
        print(f"locks {name:<14}", spread(walls), "s, / floor", spread(ratios(walls, floors)))
        print(f"  floor {spread(floors)} s, peak RSS {max(peaks):.1f} MB, rest {rest:.2f} s")
    client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running Redis to use (filled first when empty)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.url:
        measure(args.url, args.runs)
        return 0
    with RedisProcess(find_redis_server()) as server:
        measure(server.url, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
