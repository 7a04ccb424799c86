"""The pass loop: scan, classify, publish a snapshot; back off while Redis is away.

A pass runs in a background thread, never inside a scrape. Its result is published by
replacing one immutable `MonitorState`, so readers need no lock and never see half a pass.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from lock_monitor.config import RedisSettings, ScanSettings
from lock_monitor.connection import Target, connect, describe_tls_error
from lock_monitor.locks import Lock, LockTracker, display
from lock_monitor.scanner import read_locks
from lock_monitor.snapshot import OLDEST_SHOWN, Snapshot, SnapshotBuilder

BACKOFF_CAP_SECONDS = 30.0
STUCK_LOG_LIMIT = 20  # stuck-lock log lines per pass; the rest are summed up in one line


class PassFailed(Exception):
    """A pass could not read every node; nothing from it is published."""

    def __init__(self, failures: dict[str, str]) -> None:
        self.failures = failures
        super().__init__("; ".join(f"{node}: {error}" for node, error in failures.items()))


@dataclass
class StuckLocks:
    """The stuck locks of one pass, kept small: with 100,000 stuck locks a full `Lock` for
    each would double the daemon's memory, and only the few new ones are logged in full."""

    ages: dict[bytes, float] = field(default_factory=dict)  # raw key -> age
    new: list[Lock] = field(default_factory=list)  # the first STUCK_LOG_LIMIT not stuck before
    new_count: int = 0

    def add(self, key: bytes, lock: Lock, before: dict[bytes, float]) -> None:
        self.ages[key] = lock.age_seconds
        if key not in before:
            self.new_count += 1
            if len(self.new) < STUCK_LOG_LIMIT:
                self.new.append(lock)


@dataclass(frozen=True)
class MonitorState:
    """What scrapes and pages show: the last good snapshot and the monitor's own health."""

    redis_up: bool | None = None  # None until the first pass has been tried
    snapshot: Snapshot | None = None  # the last successful pass
    last_error: str | None = None
    scans_success: int = 0
    scans_error: int = 0
    delay_seconds: float = 0.0  # the wait before the next pass
    paced: bool = False  # the wait was stretched to keep within --max-redis-load
    nodes: tuple[tuple[str, bool], ...] = ()  # per-node reachability in the last pass

    def seconds_since_success(self, now: float) -> float | None:
        return None if self.snapshot is None else now - self.snapshot.completed_at


@dataclass
class Monitor:
    redis: RedisSettings
    scan: ScanSettings
    connector: Callable[[RedisSettings], Target] = connect
    log: Any = field(default_factory=lambda: structlog.get_logger("lock_monitor"))

    def __post_init__(self) -> None:
        self.state = MonitorState(delay_seconds=self.scan.interval)
        self._tracker = LockTracker(self.scan.stuck_threshold)
        self._target: Target | None = None
        self._stuck: dict[bytes, float] = {}  # raw key -> age, of the locks stuck last pass
        self._failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pass-loop", daemon=True)

    # --- one pass -------------------------------------------------------------------------

    def run_pass(self, keep: int | None = OLDEST_SHOWN) -> tuple[Snapshot, StuckLocks]:
        """Read every node once; return the snapshot and the stuck locks, or raise."""
        started = time.monotonic()
        if self._target is None:
            self._target = self.connector(self.redis)
        builder = SnapshotBuilder(keep=keep)
        seen: set[bytes] = set()
        stuck = StuckLocks()
        failures: dict[str, str] = {}
        nodes: list[tuple[str, bool]] = []
        cluster = self.redis.mode == "cluster"
        try:
            for name, client in self._target.nodes():
                try:
                    for raw in read_locks(
                        client, self.scan.pattern, self.scan.count, seen, cluster=cluster
                    ):
                        lock = self._tracker.classify(raw)
                        builder.add(lock)
                        if lock.stuck:
                            stuck.add(raw.key, lock, self._stuck)
                except Exception as exc:  # any node failing fails the pass, after trying all
                    failures[name] = self.describe_error(exc)
                nodes.append((name, name not in failures))
        except Exception as exc:  # the topology itself could not be read
            failures["topology"] = self.describe_error(exc)
        self.state = replace(self.state, nodes=tuple(nodes))
        if failures:
            self._tracker.abandon_pass()
            self._drop_target()
            raise PassFailed(failures)
        self._tracker.finish_pass()
        builder.keys_scanned = len(seen)
        snapshot = builder.build(time.time(), time.monotonic() - started)
        return snapshot, stuck

    def describe_error(self, exc: BaseException) -> str:
        """One line for logs and pages, with any secret scrubbed out."""
        if isinstance(exc, PassFailed):
            text = str(exc)
        else:
            text = describe_tls_error(exc) or f"{type(exc).__name__}: {exc}"
        return self.redis.scrub(text) or type(exc).__name__

    def _drop_target(self) -> None:
        """Reconnect next time: fresh sockets, a new primary; a cluster keeps the nodes it knows."""
        if self._target is not None:
            try:
                self._target.close()
            except Exception as exc:  # closing a broken connection may fail; nothing to do
                self.log.debug("close_failed", error=self.describe_error(exc))
            if not self._target.keeps_topology:
                self._target = None

    # --- the loop -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            delay = self.step()
            self._stop.wait(delay)

    def step(self) -> float:
        """One pass with its bookkeeping; returns how long to wait before the next."""
        try:
            snapshot, stuck = self.run_pass()
        except Exception as exc:
            self._on_failure(exc if isinstance(exc, PassFailed) else self.describe_error(exc))
        else:
            self._on_success(snapshot, stuck)
        return self.state.delay_seconds

    def _on_success(self, snapshot: Snapshot, stuck: StuckLocks) -> None:
        previous = self.state
        if previous.redis_up is not True:
            self.log.info(
                "redis_recovered" if previous.redis_up is False else "redis_connected",
                target=self.redis.target(),
            )
        self._failures = 0
        delay = self.paced_delay(snapshot.duration_seconds)
        self._log_stuck_changes(stuck)
        self.state = replace(
            previous,
            redis_up=True,
            snapshot=snapshot,
            last_error=None,
            scans_success=previous.scans_success + 1,
            delay_seconds=delay,
            paced=delay > self.scan.interval,
        )

    def _on_failure(self, error: PassFailed | str) -> None:
        previous = self.state
        message = str(error)
        if previous.redis_up is not False:
            event = "redis_lost" if previous.redis_up else "redis_unavailable"
            self.log.error(event, target=self.redis.target(), error=message)
        elif message != previous.last_error:
            self.log.warning("redis_still_unavailable", error=message)
        self._failures += 1
        self.state = replace(
            previous,
            redis_up=False,
            last_error=message,
            scans_error=previous.scans_error + 1,
            delay_seconds=self.backoff_delay(self._failures),
            paced=False,
        )

    def paced_delay(self, duration: float) -> float:
        """The wait after a pass: the interval, stretched so Redis' share stays bounded.

        The pass's wall time stands in for the time Redis spent on it (an upper bound), so
        the monitor's share of Redis is at most duration / (duration + wait).
        """
        load = self.scan.max_redis_load
        needed = duration * (1.0 - load) / load if load < 1.0 else 0.0
        return max(self.scan.interval, needed)

    def backoff_delay(self, failures: int) -> float:
        """Capped exponential backoff with jitter, so many monitors do not retry in step."""
        base = min(self.scan.interval, 1.0)
        cap = max(self.scan.interval, BACKOFF_CAP_SECONDS)
        ceiling = min(cap, base * 2 ** min(failures - 1, 16))
        return random.uniform(ceiling / 2, ceiling)

    def _log_stuck_changes(self, stuck: StuckLocks) -> None:
        cleared = [key for key in self._stuck if key not in stuck.ages]
        for lock in stuck.new:
            self.log.warning(
                "lock_stuck",
                key=lock.key,
                age_seconds=round(lock.age_seconds, 3),
                value=lock.value,
                ttl_seconds=lock.ttl_seconds,
            )
        for key in cleared[:STUCK_LOG_LIMIT]:
            self.log.info(
                "stuck_lock_cleared",
                key=display(key, "key"),
                last_age_seconds=round(self._stuck[key], 3),
            )
        if stuck.new_count > STUCK_LOG_LIMIT or len(cleared) > STUCK_LOG_LIMIT:
            self.log.warning(
                "stuck_locks_changed",
                became_stuck=stuck.new_count,
                cleared=len(cleared),
                stuck=len(stuck.ages),
            )
        self._stuck = stuck.ages
