"""The pass loop: read a pass, turn the result into the published state and the log, wait.

Reading is `passes.read_pass`, when to run next is `schedule`, which locks to log is
`stuck_log`; this module only sequences them and owns what lives between passes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog

from lock_monitor.config import RedisSettings, ScanSettings
from lock_monitor.connection import Target, connect
from lock_monitor.history import History
from lock_monitor.passes import NodeStatus, PassFailed, PassResult, describe_error, read_pass
from lock_monitor.passlocks import PassLocks
from lock_monitor.schedule import backoff_delay, paced_delay
from lock_monitor.snapshot import Snapshot
from lock_monitor.stuck_log import StuckMemory, log_stuck_changes
from lock_monitor.tracker import LockTracker

if TYPE_CHECKING:  # the daemon hands its Events in: `lock-monitor locks` runs without them
    from lock_monitor.events import Events


@dataclass(frozen=True)
class MonitorState:
    """What scrapes and pages show: the last good snapshot and the monitor's own health.

    Immutable and replaced whole by the pass loop, its only writer: readers take it without
    a lock and never see half a pass. (A keyspace-event subscriber, when there is one, adds
    its fields here and hands its news to the loop, which publishes it with the rest.)
    """

    redis_up: bool | None = None  # None until the first pass has been tried
    snapshot: Snapshot | None = None  # the last successful pass
    last_error: str | None = None
    scans_success: int = 0
    scans_error: int = 0
    delay_seconds: float = 0.0  # the wait before the next pass
    paced: bool = False  # the wait was stretched to keep within --max-redis-load
    nodes: NodeStatus = ()  # per-node reachability in the last pass

    def seconds_since_success(self, now: float) -> float | None:
        return None if self.snapshot is None else now - self.snapshot.completed_at


@dataclass
class Monitor:
    """The daemon's one source of lock data: passes in a background thread, one state out.

    A pass over a large keyspace takes far longer than a scrape may wait, so passes run on
    their own schedule and every scrape and page reads the last published `state`. The loop
    owns what must outlive a pass: the connection (kept, so a pass costs no reconnect), the
    first sightings of locks, the stuck locks it named last time, and the count of failures
    in a row.
    """

    redis: RedisSettings
    scan: ScanSettings
    connector: Callable[[RedisSettings], Target] = connect
    log: Any = field(default_factory=lambda: structlog.get_logger("lock_monitor"))
    history: History = field(default_factory=History)  # the recent passes, for the page's charts
    events: Events | None = None  # the keyspace-event subscribers, when --events is not off

    def __post_init__(self) -> None:
        self.state = MonitorState(delay_seconds=self.scan.interval)
        self._tracker = LockTracker(self.scan.stuck_threshold)
        self._target: Target | None = None
        self._stuck = StuckMemory()  # the locks stuck in the last pass
        self._failures = 0
        self._min_wait = 0.0  # the shortest wait pacing allows after the last pass
        self._paced_on_wall_time = False  # logged once: the ACL refuses INFO
        self._stop = threading.Event()
        self._soon = threading.Event()  # a pass is wanted early (events subscribed or lost)
        self._thread = threading.Thread(target=self._loop, name="pass-loop", daemon=True)
        if self.events is not None:
            self.events.pass_wanted = self._soon.set

    def start(self) -> None:
        if self.events is not None:
            self.events.start()
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._soon.set()
        self._thread.join(timeout)
        if self.events is not None:
            self.events.stop(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            delay = self.step()
            waited_from = time.monotonic()
            if self._soon.wait(delay):
                # Events were (re)subscribed: only a pass that starts now can make the live
                # set current; or lost: the gauges come from passes again, and a lost Redis
                # must show now. The pass comes as soon as the pacing allows.
                self._soon.clear()
                self._stop.wait(self._min_wait - (time.monotonic() - waited_from))

    def step(self) -> float:
        """One pass with its bookkeeping; returns how long to wait before the next.

        Readers return results and only this method publishes them. The keyspace events,
        when followed, keep their own live set between passes; a complete pass is folded
        into it here (a pass is the truth: it corrects whatever the events missed).
        """
        events = self.events
        mark = events.begin_pass() if events is not None else None
        # A pass gathers its locks for the live set only while every node is subscribed: the
        # set is of no use otherwise, and a million locks would cost tens of MB each pass.
        held = PassLocks() if mark is not None and mark.subscribed else None
        try:
            if self._target is None:
                self._target = self.connector(self.redis)
            result = read_pass(self._target, self.scan, self._tracker, self._stuck, held=held)
        except PassFailed as failed:
            self._drop_target()
            self._on_failure(str(failed), failed.nodes)
        except Exception as exc:  # connecting (a cluster reads its topology then) failed
            self._on_failure(describe_error(exc, self.redis), self.state.nodes)
        else:
            if events is not None and mark is not None and held is not None:
                events.reconcile(mark, held)
            self._on_success(result)
            return self.state.delay_seconds
        if events is not None:
            events.pass_failed()
        return self.state.delay_seconds

    def _drop_target(self) -> None:
        """Reconnect next time: fresh sockets, a new primary; a cluster keeps the nodes it knows."""
        if self._target is not None:
            try:
                self._target.close()
            except Exception as exc:  # closing a broken connection may fail; nothing to do
                self.log.debug("close_failed", error=describe_error(exc, self.redis))
            if not self._target.keeps_topology:
                self._target = None

    def _on_success(self, result: PassResult) -> None:
        previous = self.state
        if previous.redis_up is not True:
            self.log.info(
                "redis_recovered" if previous.redis_up is False else "redis_connected",
                target=self.redis.target(),
            )
        self._failures = 0
        log_stuck_changes(self.log, result.stuck)
        self._stuck = result.stuck.remembered
        if result.redis_seconds is None and not self._paced_on_wall_time:
            self._paced_on_wall_time = True
            self.log.info("pacing_on_wall_time", reason="INFO commandstats refused (no +info)")
        snapshot = result.snapshot
        self.history.record(
            snapshot.completed_at,
            {
                "active": snapshot.active,
                "stuck": snapshot.stuck,
                "without_ttl": snapshot.without_ttl,
                "oldest_age_seconds": snapshot.oldest_age_seconds,
            },
        )
        # An early pass (events just subscribed) waits only what the pacing asks, on the same
        # Redis time and under the same cap as the regular wait.
        pace = partial(paced_delay, result.redis_seconds, snapshot.duration_seconds)
        delay = pace(self.scan.interval, self.scan.max_redis_load)
        self._min_wait = pace(0.0, self.scan.max_redis_load)
        self.state = replace(
            previous,
            redis_up=True,
            snapshot=result.snapshot,
            last_error=None,
            scans_success=previous.scans_success + 1,
            delay_seconds=delay,
            paced=delay > self.scan.interval,
            nodes=result.nodes,
        )

    def _on_failure(self, message: str, nodes: NodeStatus) -> None:
        previous = self.state
        if previous.redis_up is not False:
            event = "redis_lost" if previous.redis_up else "redis_unavailable"
            self.log.error(event, target=self.redis.target(), error=message)
        elif message != previous.last_error:
            self.log.warning("redis_still_unavailable", error=message)
        self._failures += 1
        self._min_wait = backoff_delay(self._failures, self.scan.interval)
        self.state = replace(
            previous,
            redis_up=False,
            last_error=message,
            scans_error=previous.scans_error + 1,
            delay_seconds=self._min_wait,
            paced=False,
            nodes=nodes,
        )
