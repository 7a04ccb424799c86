"""Following the lock keys' keyspace events: a subscriber per node that holds keys, kept in
line with the topology by a supervisor.

Events are local to a node, so there is a subscriber (`subscriber.Subscriber`) per Cluster
primary, or on Sentinel's current primary; the supervisor follows the topology and replaces
subscribers when it changes. Pub/Sub is fire-and-forget: whatever is published while a
subscriber is away is lost, so every loss marks the live set unusable until a pass has
reconciled it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from lock_monitor.config import EventsMode, RedisSettings
from lock_monitor.connection import Node, Target, connect
from lock_monitor.livecounts import EventCounters, LiveCounts
from lock_monitor.liveset import LiveSet
from lock_monitor.passlocks import PassLock
from lock_monitor.reconcile import PassMark, abandon_pass, begin_pass, reconcile
from lock_monitor.subscriber import RECOMMENDED_SETTING, Subscriber, backoff, channel_prefix

TOPOLOGY_EVERY = 5.0  # how often the supervisor re-reads the nodes (or Sentinel's primary)
DRAIN_WAIT = 1.0  # longest a reconcile waits for the subscribers to read what is on its way


@dataclass(frozen=True)
class EventsStatus:
    """What the status page and the metrics say about the events."""

    mode: EventsMode
    state: str  # off | starting | live | unverified | down | unavailable | refused
    reason: str | None
    nodes: tuple[tuple[str, str], ...]  # (node, subscriber state)
    ever_live: bool
    reconnects: int

    @property
    def up(self) -> bool:
        return self.state == "live"


@dataclass(frozen=True)
class EventsView:
    """The events as one scrape or page sees them."""

    status: EventsStatus
    counts: LiveCounts | None  # the lock gauges now, while the live set is current
    counters: EventCounters
    ended: frozenset[str] = frozenset()  # keys shown from the last pass the events saw end


class Events:
    """The subscribers, one per node, kept in line with the topology by a supervisor thread."""

    def __init__(
        self,
        settings: RedisSettings,
        pattern: str,
        mode: EventsMode,
        live: LiveSet,
        log: Any,
        connector: Callable[[RedisSettings], Target] = connect,
    ) -> None:
        self.settings = settings
        self.pattern = pattern
        self.mode = mode
        self.live = live
        self.log = log
        self.connector = connector
        self._lock = threading.RLock()
        self._subscribers: dict[str, Subscriber] = {}
        self._target: Target | None = None
        self._topology_error: str | None = None
        self._state = "off" if mode == "off" else "starting"
        self._reason: str | None = None
        self._sessions: tuple[tuple[str, int], ...] = ()
        self._ever_live = False
        self._ever_subscribed = False  # from then on, a new subscription is a reconnect
        self._inferred: str | None = None  # why the traffic says the server does not publish
        self._reconnects = 0
        # A pass is wanted now: every node is subscribed anew (only a pass can make the live
        # set current), or a subscription was lost (the gauges fall back on passes, and a
        # lost Redis must show at once, not a pass interval later).
        self.pass_wanted: Callable[[], None] = lambda: None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="events", daemon=True)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self.mode != "off":
            self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the supervisor, which stops the subscribers and then closes the connections
        (not here: it may still be using them when `timeout` runs out)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def status(self) -> EventsStatus:
        with self._lock:
            return EventsStatus(
                mode=self.mode,
                state=self._state,
                reason=self._reason,
                nodes=tuple((name, sub.state) for name, sub in sorted(self._subscribers.items())),
                ever_live=self._ever_live,
                reconnects=self._reconnects,
            )

    def view(self, shown: Sequence[str] = ()) -> EventsView:
        """The events now; `shown`: keys a page lists from the last pass, to tell which of
        them the events saw end since."""
        status = self.status()
        current = self.live.current(shown) if status.up else None
        if current is None:
            return EventsView(status, None, self.live.counters())
        return EventsView(status, current.counts, self.live.counters(), current.ended)

    # --- what passes ask of it ------------------------------------------------------------

    def begin_pass(self) -> PassMark:
        return begin_pass(self.live)

    def pass_failed(self) -> None:
        abandon_pass(self.live)

    def reconcile(self, mark: PassMark, locks: Sequence[PassLock]) -> None:
        """Fold a complete pass into the live set, once the events sent before it are in."""
        self._measure_offset()
        self.wait_drained(time.monotonic(), DRAIN_WAIT)
        corrections, comparable = reconcile(self.live, mark, locks)
        self._reconciled(corrections, comparable)

    def _measure_offset(self) -> None:
        """Redis' clock against this host's monotonic one, from a TIME half-way through."""
        with self._lock:
            subscriber = next(iter(self._subscribers.values()), None)
        if subscriber is None:
            return
        try:
            before = time.monotonic()
            seconds, micros = subscriber.client.time()
            after = time.monotonic()
        except redis.RedisError:
            return  # keep the last offset: clocks do not drift far between passes
        self.live.measure_offset(seconds + micros / 1e6, (before + after) / 2)

    def wait_drained(self, since: float, timeout: float) -> None:
        """Wait until every subscribed node has read all that was sent before `since` (the end
        of a pass), so a reconcile never undoes an event that was already on its way."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                behind = [
                    sub
                    for sub in self._subscribers.values()
                    if sub.state == "up" and sub.drained_at < since
                ]
            if not behind:
                return
            time.sleep(0.002)

    def _reconciled(self, corrections: int, comparable: bool) -> None:
        """A pass found `corrections` differences with a set it could be compared to: if no
        node has published a single event meanwhile, the server does not publish them."""
        with self._lock:
            if comparable and corrections and self._state == "unverified":
                self._inferred = (
                    "no keyspace event arrived while the locks changed (CONFIG GET is not "
                    f"allowed to check notify-keyspace-events; it needs {RECOMMENDED_SETTING!r})"
                )
                self._update_state()

    # --- the supervisor ---------------------------------------------------------------------

    def _supervise(self) -> None:
        try:
            self._follow_topology()
        finally:
            with self._lock:
                subscribers = list(self._subscribers.values())
            for subscriber in subscribers:
                subscriber.stop()
            for subscriber in subscribers:
                subscriber.join(self.settings.timeout)
            self._drop_target()

    def _follow_topology(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                if self._target is None:
                    self._target = self.connector(self.settings)
                self._follow(self._target.nodes())
                failures = 0
                wait = TOPOLOGY_EVERY
            except Exception as exc:  # the topology could not be read: retry with backoff
                failures += 1
                wait = min(TOPOLOGY_EVERY, backoff(failures))
                with self._lock:
                    self._topology_error = self.settings.scrub(f"{type(exc).__name__}: {exc}")
                    self._update_state()
                self._drop_target()
            self._wake.wait(wait)
            self._wake.clear()

    def _drop_target(self) -> None:
        if self._target is None:
            return
        with contextlib.suppress(Exception):  # a broken connection may fail to close
            self._target.close()
        if not self._target.keeps_topology:
            self._target = None

    def _follow(self, nodes: list[Node]) -> None:
        """Start a subscriber for each new node, stop those of nodes that went away."""
        names = {name for name, _ in nodes}
        with self._lock:
            self._topology_error = None
            gone = [sub for name, sub in self._subscribers.items() if name not in names]
            for subscriber in gone:
                del self._subscribers[subscriber.name]
                subscriber.stop()
            for name, client in nodes:
                if name not in self._subscribers and not self._stop.is_set():
                    subscriber = Subscriber(
                        name, client, self.pattern, self.live, self._changed, self.settings.timeout
                    )
                    self._subscribers[name] = subscriber
                    subscriber.start()
            self._update_state()

    def _changed(self, subscriber: Subscriber) -> None:
        with self._lock:
            if self._subscribers.get(subscriber.name) is not subscriber:
                return  # replaced after a topology change: its news is stale
            if subscriber.state == "down":
                self._wake.set()  # a failover? read the topology again now
            if subscriber.verified:
                self._inferred = None
            self._update_state()

    def _update_state(self) -> None:
        """Recompute the overall state (with the lock held); log each change once."""
        subscribers = list(self._subscribers.values())
        sessions = tuple(sorted((s.name, s.sessions) for s in subscribers if s.state == "up"))
        all_up = bool(subscribers) and all(s.state == "up" for s in subscribers)
        if sessions != self._sessions:
            if self._ever_subscribed:
                self._reconnects += sum(1 for session in sessions if session not in self._sessions)
            lost = any(session not in sessions for session in self._sessions)
            self._sessions = sessions
            self._ever_subscribed = self._ever_subscribed or all_up
            self.live.subscriptions_changed(all_up)
            if all_up or lost:
                self.pass_wanted()
        states = {s.state for s in subscribers}
        reason: str | None = None
        if "refused" in states:
            state = "refused"
            reason = next(s.reason for s in subscribers if s.state == "refused")
        elif "unavailable" in states:
            state = "unavailable"
            reason = next(s.reason for s in subscribers if s.state == "unavailable")
        elif all_up and all(s.verified for s in subscribers):
            state = "live"
        elif all_up:
            state, reason = (
                ("unavailable", self._inferred) if self._inferred else ("unverified", None)
            )
        else:
            state = "down" if self._ever_live else "starting"
            reason = self._topology_error or next(
                (s.reason for s in subscribers if s.state == "down"), None
            )
        if reason is not None:  # a server's error text: no secret, one line, bounded
            reason = self.settings.scrub(reason)
        # Whether the server publishes does not change when a subscriber is briefly away.
        self.live.set_verified(bool(subscribers) and all(s.verified for s in subscribers))
        if state == "live":
            self._ever_live = True
        if (state, reason) != (self._state, self._reason):
            self._log_change(state, reason)
        self._state, self._reason = state, reason

    def _log_change(self, state: str, reason: str | None) -> None:
        previous = self._state
        if state == "live":
            self.log.info("events_live", nodes=len(self._subscribers), channel=self.pattern)
        elif state == "refused":
            self.log.warning(
                "events_refused",
                error=reason,
                hint=f"the Redis user needs +psubscribe and the channel "
                f"&{self._channel_text()}; running on passes alone",
            )
        elif state == "unavailable":
            (self.log.error if self.mode == "on" else self.log.warning)(
                "events_unavailable", reason=reason, hint="running on passes alone"
            )
        elif state == "down" and previous != "down":
            self.log.warning("events_down", error=reason)

    def _channel_text(self) -> str:
        subscriber = next(iter(self._subscribers.values()), None)
        if subscriber is None:
            return channel_prefix(0).decode() + self.pattern
        return subscriber.channel.decode("utf-8", "backslashreplace")
