"""`make bench`, the live lock set at its limit: /metrics while a pass reconciles 1,000,000 locks.

The live set is filled directly (no Redis: what is measured is the set's own work under its
lock, not reading Redis), in a process of its own that serves the exporter's /metrics as the
daemon does. That process runs, back to back, a pass reconciling all 1,000,000 locks (each
with the flags a real pass gives it) and, beside it, 20,000 lock events/s (acquisitions and
releases); this process scrapes /metrics meanwhile, as `bench.py` does (c). Prints p50/p99
of the scrapes, idle and under that load, with the time a pass takes; exits 1 when the p99
under load passes 10 ms.
"""

from __future__ import annotations

import math
import multiprocessing
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import SCRAPES, Daemon, scrape_latency  # the sibling benchmark

from lock_monitor.events import EventsStatus, EventsView
from lock_monitor.eventstream import Stream
from lock_monitor.httpserver import HttpServer
from lock_monitor.liveset import LiveSet
from lock_monitor.metrics import build_registry
from lock_monitor.monitor import MonitorState
from lock_monitor.passlocks import PassLocks
from lock_monitor.reconcile import begin_pass, reconcile
from lock_monitor.snapshot import Snapshot
from lock_monitor.web import App

LOCKS = 1_000_000
EVENTS_PER_SECOND = 20_000
TICK = 0.01  # the event thread applies one batch per tick, as a subscriber reads them
P99_TARGET_MS = 10.0
PREFIX = b"__keyspace@0__:"


def pass_locks(now: float) -> PassLocks:
    """1,000,000 locks as a pass hands them over: ages up to 10 min, a tenth without TTL,
    half with the holder's stamp."""
    locks = PassLocks()
    every = range(LOCKS)
    locks.extend(
        [b"lock:appointment:%07d" % i for i in every],
        [now - (i % 600) for i in every],
        [i % 10 != 0 for i in every],
        [i % 2 == 0 for i in every],
    )
    return locks


def serve(ready: Any, load: Any, stop: Any, report: Any) -> None:
    """The exporter's side: the live set, a pass loop and events on it, and /metrics."""
    live = LiveSet(stuck_threshold=30)
    live.subscriptions_changed(True)
    live.set_verified(True)
    locks = pass_locks(live.redis_now())
    started = time.perf_counter()
    reconcile(live, begin_pass(live), locks)
    seeded = time.perf_counter() - started
    assert live.counts().active == LOCKS
    status = EventsStatus("on", "live", None, (("bench", "up"),), ever_live=True, reconnects=0)

    def view(shown: Any = ()) -> EventsView:
        return EventsView(status, live.counts(), live.counters())

    state = MonitorState(
        redis_up=True, snapshot=Snapshot(time.time(), 1.0, LOCKS, LOCKS, 0, 0, ()), nodes=()
    )
    registry = build_registry(lambda: state, "standalone", view)
    app = App(lambda: state, lambda: True, registry, "redis://bench", "standalone", 5, events=view)
    server = HttpServer(app, "127.0.0.1", 0)
    server.start()
    ready.put(server.port)
    loaded = threading.Event()
    passes: list[float] = []
    applied = [0]

    def pass_loop() -> None:
        loaded.wait()
        while not stop.is_set():
            began = time.perf_counter()
            reconcile(live, begin_pass(live), locks)
            passes.append(time.perf_counter() - began)

    def event_loop() -> None:
        loaded.wait()
        stream = Stream(live, PREFIX)
        per_tick = int(EVENTS_PER_SECOND * TICK) // 3  # set, expire, del
        cycle, due = 0, time.monotonic()
        while not stop.is_set():
            batch = []
            for _ in range(per_tick):
                channel = PREFIX + b"lock:appointment:ev-%d" % (cycle % 50_000)
                batch += [[b"pmessage", b"*", channel, e] for e in (b"set", b"expire", b"del")]
                cycle += 1
            stream.apply(batch)
            applied[0] += len(batch)
            due += TICK
            time.sleep(max(0.0, due - time.monotonic()))

    threads = [threading.Thread(target=loop) for loop in (pass_loop, event_loop)]
    for thread in threads:
        thread.start()
    load.wait()  # the idle scrapes are done
    loaded.set()
    load_started = time.monotonic()
    stop.wait()
    for thread in threads:
        thread.join()
    report.put(
        {
            "seed_seconds": seeded,
            "passes": passes,
            "events_per_second": applied[0] / (time.monotonic() - load_started),
        }
    )
    server.stop()


class Exporter(Daemon):
    """The exporter process above as `bench.scrape_latency` reads a daemon: its /metrics."""

    def __init__(self, port: int) -> None:  # started by multiprocessing, not as a command
        self.port = port

    def wait_for_passes(self, count: int, timeout: float = 0) -> dict[str, float]:
        return self.metrics()  # the live set is filled before the port is known

    def passes(self) -> float:
        return math.inf  # its passes are not the monitor's: SCRAPES scrapes span several


def main() -> int:
    ready, report = multiprocessing.Queue(), multiprocessing.Queue()
    load, stop = multiprocessing.Event(), multiprocessing.Event()
    process = multiprocessing.Process(target=serve, args=(ready, load, stop, report))
    process.start()
    exporter = Exporter(ready.get(timeout=600))
    idle = scrape_latency(exporter)
    load.set()
    time.sleep(1.0)  # the first pass and the events under way
    loaded = scrape_latency(exporter)
    stop.set()
    result = report.get(timeout=600)
    process.join()
    passes = result["passes"]
    print(f"live set of {LOCKS:,} locks, filled by a first pass in {result['seed_seconds']:.2f} s")
    print(f"/metrics idle, {SCRAPES} scrapes: p50 {idle.p50:.2f} ms, p99 {idle.p99:.2f} ms")
    print(
        f"/metrics while passes reconcile all {LOCKS:,} locks back to back ({len(passes)} passes, "
        f"median {statistics.median(passes):.2f} s) and {result['events_per_second']:,.0f} "
        f"events/s are applied: p50 {loaded.p50:.2f} ms, p99 {loaded.p99:.2f} ms "
        f"(target p99 <= {P99_TARGET_MS:g} ms)"
    )
    return 0 if loaded.p99 <= P99_TARGET_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
