"""Prometheus metrics, built from the monitor's state on every scrape.

The values come from the last completed pass (gathering them costs a full SCAN, too much
to do inside a scrape), or, while keyspace events are live, from the live lock set as it is
at the moment of the scrape. While Redis cannot be read the lock gauges are absent rather
than 0: an outage must never read as "no stuck locks".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from lock_monitor import __version__
from lock_monitor.events import EventsStatus, EventsView
from lock_monitor.livecounts import HOLD_BUCKETS, OUTCOMES, EventCounters, HoldHistogram
from lock_monitor.monitor import MonitorState
from lock_monitor.snapshot import Snapshot

FROM_LAST_PASS = "from the last successful pass"  # noqa: S105 (not a password)
LIVE_OR_LAST_PASS = "live from keyspace events while they are up, else " + FROM_LAST_PASS


# A state in which every metric is known, so `describe` names them all.
EVERY_METRIC_KNOWN = MonitorState(
    redis_up=True, snapshot=Snapshot(0.0, 0.0, 0, 0, 0, 0, ()), nodes=(("node", True),)
)
EVERY_EVENT_KNOWN = EventsView(
    EventsStatus("on", "live", None, (), ever_live=True, reconnects=0),
    None,
    EventCounters(
        acquisitions=0,
        renewals=0,
        releases=dict.fromkeys(OUTCOMES, 0),
        received=0,
        corrections=0,
        hold=dict.fromkeys(OUTCOMES, HoldHistogram((0,) * (len(HOLD_BUCKETS) + 1), 0.0)),
        recent=(),
    ),
)


class LockCollector(Collector):
    """Every metric of a scrape, built from one read of the published state.

    A custom collector rather than gauges the loop sets: a scrape then reflects one pass,
    never half of one, and what is unknown (no pass yet, Redis down) is simply not yielded,
    where a set gauge would keep showing its last value, or 0.
    """

    def __init__(
        self,
        state: Callable[[], MonitorState],
        mode: str,
        events: Callable[[], EventsView] | None = None,
    ) -> None:
        self._state = state
        self._mode = mode
        self._events = events

    def collect(self) -> Iterator[Metric]:
        view = self._events() if self._events is not None else None
        return self._families(self._state(), view)  # read once: a scrape comes from one state

    def describe(self) -> list[Metric]:
        """Every family a scrape may hold, by name: client_python's registry finds a collector
        by these when a scrape asks for some (`/metrics?name[]=...`); without them it finds none."""
        view = EVERY_EVENT_KNOWN if self._events is not None else None
        return list(self._families(EVERY_METRIC_KNOWN, view))

    def _families(self, state: MonitorState, view: EventsView | None) -> Iterator[Metric]:
        if view is not None:
            yield from event_metrics(view)
        yield InfoMetricFamily(
            "lock_monitor_build",
            "lock-monitor version and Redis mode",
            value={"version": __version__, "mode": self._mode},
        )
        if state.redis_up is not None:
            yield GaugeMetricFamily(
                "lock_monitor_redis_up",
                "1 if the last pass read Redis, 0 if it failed",
                value=float(state.redis_up),
            )
        scans = CounterMetricFamily(
            "lock_monitor_scans", "Passes over the lock keys, by result", labels=["result"]
        )
        scans.add_metric(["success"], state.scans_success)
        scans.add_metric(["error"], state.scans_error)
        yield scans
        yield GaugeMetricFamily(
            "lock_monitor_next_pass_delay_seconds",
            "Wait before the next pass: the interval, longer when backing off or pacing",
            value=state.delay_seconds,
        )
        yield GaugeMetricFamily(
            "lock_monitor_pacing_active",
            "1 if passes take long enough that the wait was stretched to bound Redis load",
            value=float(state.paced),
        )
        if self._mode == "cluster":
            node_up = GaugeMetricFamily(
                "lock_monitor_node_up", "1 if the node was read in the last pass", labels=["node"]
            )
            for name, up in state.nodes:
                node_up.add_metric([name], float(up))
            yield node_up
        snapshot = state.snapshot
        if snapshot is None:
            return
        yield GaugeMetricFamily(
            "lock_monitor_last_check_timestamp",
            "Unix time in seconds of the last successful pass",
            value=snapshot.completed_at,
        )
        if not state.redis_up:
            return
        locks = view.counts if view is not None and view.counts is not None else snapshot
        gauges = [
            ("active_locks_count", "Locks held, " + LIVE_OR_LAST_PASS, locks.active),
            (
                "stuck_locks_count",
                "Locks held longer than the stuck threshold, " + LIVE_OR_LAST_PASS,
                locks.stuck,
            ),
            (
                "lock_monitor_locks_without_ttl",
                "Locks that never expire, " + LIVE_OR_LAST_PASS,
                locks.without_ttl,
            ),
            (
                "lock_monitor_oldest_lock_age_seconds",
                "Age of the oldest lock (0 when none), " + LIVE_OR_LAST_PASS,
                locks.oldest_age_seconds,
            ),
            (
                "lock_monitor_scan_duration_seconds",
                "Duration of the last successful pass",
                snapshot.duration_seconds,
            ),
            (
                "lock_monitor_keys_scanned",
                "Keys matching the pattern, " + FROM_LAST_PASS,
                snapshot.keys_scanned,
            ),
        ]
        for name, documentation, value in gauges:
            yield GaugeMetricFamily(name, documentation, value=float(value))


def event_metrics(view: EventsView) -> Iterator[Metric]:
    """Whether events are up; once they have been, the lifecycle counters since start."""
    yield GaugeMetricFamily(
        "lock_monitor_events_up",
        "1 when subscribed to the lock keys' keyspace events on every node",
        value=float(view.status.up),
    )
    if not view.status.ever_live:
        return  # unknown, not 0: nothing has been counted
    counters = view.counters
    plain = [
        ("lock_monitor_lock_acquisitions", "Locks taken", counters.acquisitions),
        ("lock_monitor_lock_renewals", "TTLs of held locks set again", counters.renewals),
        ("lock_monitor_events_received", "Keyspace events received", counters.received),
        (
            "lock_monitor_events_reconnects",
            "Subscriptions made again after one was lost",
            view.status.reconnects,
        ),
        (
            "lock_monitor_reconcile_corrections",
            "Locks a pass found different from what the events said",
            counters.corrections,
        ),
    ]
    for name, documentation, value in plain:
        yield CounterMetricFamily(name, documentation, value=value)
    releases = CounterMetricFamily(
        "lock_monitor_lock_releases",
        "Locks that ended: released (DEL), expired (the TTL ran out), evicted (maxmemory)",
        labels=["outcome"],
    )
    hold = HistogramMetricFamily(
        "lock_monitor_lock_hold_seconds",
        "How long locks were held, by how they ended (when the acquisition was seen)",
        labels=["outcome"],
    )
    for outcome in OUTCOMES:
        releases.add_metric([outcome], counters.releases[outcome])
        histogram = counters.hold[outcome]
        bounds = [str(bound) for bound in HOLD_BUCKETS] + ["+Inf"]
        hold.add_metric(
            [outcome], list(zip(bounds, histogram.buckets, strict=True)), histogram.total
        )
    yield releases
    yield hold


def build_registry(
    state: Callable[[], MonitorState],
    mode: str,
    events: Callable[[], EventsView] | None = None,
) -> CollectorRegistry:
    """A registry of our own: our metrics and the process' own (memory, CPU, open files)."""
    # auto_describe: the process collector has no describe(); it is read once at registration.
    registry = CollectorRegistry(auto_describe=True)
    registry.register(LockCollector(state, mode, events))
    ProcessCollector(registry=registry)  # the standard process_* metrics
    return registry
