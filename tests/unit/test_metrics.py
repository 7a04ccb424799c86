from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from lock_monitor.events import EventsStatus, EventsView
from lock_monitor.eventstream import Stream
from lock_monitor.livecounts import LiveCounts
from lock_monitor.liveset import LiveSet
from lock_monitor.locks import Lock
from lock_monitor.metrics import build_registry
from lock_monitor.monitor import MonitorState
from lock_monitor.reconcile import begin_pass, reconcile
from lock_monitor.snapshot import Snapshot

LOCK_GAUGES = {
    "active_locks_count",
    "stuck_locks_count",
    "lock_monitor_locks_without_ttl",
    "lock_monitor_oldest_lock_age_seconds",
}
SNAPSHOT = Snapshot(
    completed_at=1_800_000_000.5,
    duration_seconds=0.125,
    keys_scanned=9,
    active=7,
    stuck=3,
    without_ttl=2,
    oldest=(Lock("lock:appointment:1", "v", "string", 3.0, 95.0, "value", True),),
)


def scrape(state: MonitorState, mode: str = "standalone") -> dict[str, dict[str, object]]:
    text = generate_latest(build_registry(lambda: state, mode)).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}

    def name(sample: Sample) -> str:
        result = sample.labels.get("result")
        return f'{sample.name}{{result="{result}"}}' if result else sample.name

    return {
        name(s): {"value": s.value, "labels": s.labels, "help": f.documentation}
        for f in families.values()
        for s in f.samples
    }


def test_a_successful_pass() -> None:
    metrics = scrape(MonitorState(redis_up=True, snapshot=SNAPSHOT, scans_success=4))
    assert metrics["active_locks_count"]["value"] == 7
    assert metrics["stuck_locks_count"]["value"] == 3
    assert metrics["lock_monitor_locks_without_ttl"]["value"] == 2
    assert metrics["lock_monitor_oldest_lock_age_seconds"]["value"] == 95
    assert metrics["lock_monitor_keys_scanned"]["value"] == 9
    assert metrics["lock_monitor_scan_duration_seconds"]["value"] == 0.125
    assert metrics["lock_monitor_last_check_timestamp"]["value"] == 1_800_000_000.5
    assert metrics["lock_monitor_redis_up"]["value"] == 1
    assert metrics['lock_monitor_scans_total{result="success"}']["value"] == 4
    assert metrics['lock_monitor_scans_total{result="error"}']["value"] == 0
    assert "last successful pass" in str(metrics["stuck_locks_count"]["help"])
    assert metrics["lock_monitor_build_info"]["labels"]["mode"] == "standalone"
    assert "process_resident_memory_bytes" in metrics


def test_redis_down_hides_lock_gauges_but_keeps_last_check() -> None:
    metrics = scrape(MonitorState(redis_up=False, snapshot=SNAPSHOT, scans_error=2))
    assert LOCK_GAUGES.isdisjoint(metrics)
    assert metrics["lock_monitor_redis_up"]["value"] == 0
    assert metrics["lock_monitor_last_check_timestamp"]["value"] == 1_800_000_000.5


def test_never_succeeded() -> None:
    metrics = scrape(MonitorState(redis_up=False, scans_error=1))
    assert LOCK_GAUGES.isdisjoint(metrics)
    assert "lock_monitor_last_check_timestamp" not in metrics
    assert metrics["lock_monitor_redis_up"]["value"] == 0


def test_no_lock_keys_in_labels() -> None:
    text = generate_latest(
        build_registry(lambda: MonitorState(redis_up=True, snapshot=SNAPSHOT), "standalone")
    ).decode()
    assert "lock:appointment" not in text


def test_cluster_mode_reports_each_node() -> None:
    state = MonitorState(redis_up=False, nodes=(("10.0.0.1:6379", True), ("10.0.0.2:6379", False)))
    text = generate_latest(build_registry(lambda: state, "cluster")).decode()
    node_up = {
        s.labels["node"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "lock_monitor_node_up"
    }
    assert node_up == {"10.0.0.1:6379": 1, "10.0.0.2:6379": 0}


def test_pacing_is_visible_when_it_stretches_the_wait() -> None:
    paced = scrape(MonitorState(redis_up=True, snapshot=SNAPSHOT, delay_seconds=38.0, paced=True))
    assert paced["lock_monitor_pacing_active"]["value"] == 1
    assert paced["lock_monitor_next_pass_delay_seconds"]["value"] == 38.0
    calm = scrape(MonitorState(redis_up=True, snapshot=SNAPSHOT, delay_seconds=5.0))
    assert calm["lock_monitor_pacing_active"]["value"] == 0


# --- keyspace events ------------------------------------------------------------------------


def events_view(state: str, counts: LiveCounts | None, ever_live: bool = True) -> EventsView:
    live = LiveSet(stuck_threshold=30)
    live.subscriptions_changed(True)
    live.set_verified(True)
    reconcile(live, begin_pass(live), [])
    stream = Stream(live, b"__keyspace@0__:")
    for key, event in [("a", "set"), ("a", "expire"), ("a", "del"), ("b", "set"), ("b", "evicted")]:
        stream.apply([[b"pmessage", b"*", b"__keyspace@0__:lock:" + key.encode(), event.encode()]])
    status = EventsStatus("auto", state, None, (("node", "up"),), ever_live, reconnects=2)
    return EventsView(status, counts, live.counters())


def scrape_with_events(state: MonitorState, view: EventsView) -> dict[str, list[Sample]]:
    text = generate_latest(build_registry(lambda: state, "standalone", lambda: view)).decode()
    samples: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list[Sample]], name: str, **labels: str) -> float | None:
    for sample in samples.get(name, []):
        if all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    return None


def test_while_events_are_live_the_lock_gauges_are_the_live_set_now() -> None:
    counts = LiveCounts(active=11, stuck=4, without_ttl=1, oldest_age_seconds=42.0)
    samples = scrape_with_events(
        MonitorState(redis_up=True, snapshot=SNAPSHOT), events_view("live", counts)
    )
    assert value(samples, "active_locks_count") == 11
    assert value(samples, "stuck_locks_count") == 4
    assert value(samples, "lock_monitor_locks_without_ttl") == 1
    assert value(samples, "lock_monitor_oldest_lock_age_seconds") == 42
    assert value(samples, "lock_monitor_keys_scanned") == 9  # a pass figure stays a pass figure
    assert value(samples, "lock_monitor_events_up") == 1
    assert value(samples, "lock_monitor_lock_acquisitions_total") == 2
    assert value(samples, "lock_monitor_lock_renewals_total") == 0
    assert value(samples, "lock_monitor_lock_releases_total", outcome="released") == 1
    assert value(samples, "lock_monitor_lock_releases_total", outcome="evicted") == 1
    assert value(samples, "lock_monitor_lock_releases_total", outcome="expired") == 0
    assert value(samples, "lock_monitor_events_received_total") == 5
    assert value(samples, "lock_monitor_events_reconnects_total") == 2
    assert value(samples, "lock_monitor_reconcile_corrections_total") == 0
    hold = "lock_monitor_lock_hold_seconds"
    buckets = [s for s in samples[f"{hold}_bucket"] if s.labels["outcome"] == "released"]
    assert [s.labels["le"] for s in buckets][:2] == ["0.005", "0.01"]
    assert buckets[-2].labels["le"] == "300.0"
    assert buckets[-1].labels["le"] == "+Inf"
    assert value(samples, f"{hold}_count", outcome="released") == 1
    assert value(samples, f"{hold}_count", outcome="expired") == 0


def test_while_events_are_down_the_gauges_come_from_the_last_pass() -> None:
    samples = scrape_with_events(
        MonitorState(redis_up=True, snapshot=SNAPSHOT), events_view("down", None)
    )
    assert value(samples, "active_locks_count") == 7
    assert value(samples, "stuck_locks_count") == 3
    assert value(samples, "lock_monitor_events_up") == 0
    assert value(samples, "lock_monitor_lock_acquisitions_total") == 2  # kept, never reset


def test_redis_unreadable_hides_the_gauges_even_with_a_live_set() -> None:
    counts = LiveCounts(active=11, stuck=4, without_ttl=1, oldest_age_seconds=42.0)
    samples = scrape_with_events(
        MonitorState(redis_up=False, snapshot=SNAPSHOT), events_view("live", counts)
    )
    assert all(value(samples, name) is None for name in LOCK_GAUGES)


def test_event_counters_are_absent_until_events_have_been_live() -> None:
    samples = scrape_with_events(
        MonitorState(redis_up=True, snapshot=SNAPSHOT),
        events_view("unavailable", None, ever_live=False),
    )
    assert value(samples, "lock_monitor_events_up") == 0
    assert value(samples, "lock_monitor_lock_acquisitions_total") is None
    assert "lock_monitor_lock_hold_seconds_bucket" not in samples


def test_no_event_metrics_when_events_are_off() -> None:
    text = generate_latest(
        build_registry(lambda: MonitorState(redis_up=True, snapshot=SNAPSHOT), "standalone")
    ).decode()
    assert "lock_monitor_events_up" not in text
