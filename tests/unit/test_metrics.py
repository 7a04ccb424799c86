from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from lock_monitor.locks import Lock
from lock_monitor.metrics import build_registry
from lock_monitor.monitor import MonitorState
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
