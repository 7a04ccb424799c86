"""The Grafana dashboards: the guide's title and panels, lock-monitor's Locks dashboard, and
for both, their data source, queries that parse and metrics that are documented."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.helpers import (
    DASHBOARD,
    DEPLOY,
    LOCKS_DASHBOARD,
    documented,
    documented_metrics,
    metric_names,
    promtool,
)

# Panel title -> threshold step values (after the base step), from the guide's
# "Performance Targets" table: target value, then alert threshold.
THRESHOLDS: dict[str, list[float]] = {
    "API Response Time (p95)": [2, 3],
    "Lock Wait Time": [0.5, 1],
    "Redis Memory Usage": [0.7, 0.8],
    "Lock Contention Rate": [5, 10],
    "Appointment Queue Length": [100],
    "Backup Status": [26 * 3600],  # seconds since the last success; alert BackupTooOld
    "Active Locks": [],
    "Stuck Locks": [1, 6],
}
GRAFANA_VARIABLES = re.compile(r"\$\{?__(?:rate_interval|interval|range)\}?")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module", params=[DASHBOARD, LOCKS_DASHBOARD], ids=lambda path: path.stem)
def any_dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(request.param.read_text())
    return dashboard


def targets(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel."""
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]


def test_title_and_the_guides_eight_panels(dashboard: dict[str, Any]) -> None:
    assert dashboard["title"] == "Appointment Performance (Case 3)"
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert sorted(titles) == sorted(THRESHOLDS)
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(titles)


def test_every_query_uses_the_datasource_variable(any_dashboard: dict[str, Any]) -> None:
    [variable] = [v for v in any_dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    reference = "${" + variable["name"] + "}"
    for panel in any_dashboard["panels"]:
        assert panel["datasource"]["uid"] == reference, panel["title"]
        assert all(t["datasource"]["uid"] == reference for t in panel["targets"]), panel["title"]


def test_thresholds_follow_the_performance_targets(dashboard: dict[str, Any]) -> None:
    for panel in dashboard["panels"]:
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert steps[0]["value"] is None, "the base step"
        assert [s["value"] for s in steps[1:]] == THRESHOLDS[panel["title"]], panel["title"]
        assert steps[-1]["color"] in ({"red", "green"} if len(steps) > 1 else {"green"})


def test_every_query_parses(any_dashboard: dict[str, Any], tmp_path: Path) -> None:
    """promtool checks PromQL only inside rules, so each query becomes a recording rule."""
    rules = [
        {"record": f"dashboard:panel_{i}", "expr": GRAFANA_VARIABLES.sub("5m", expr)}
        for i, (_, expr) in enumerate(targets(any_dashboard))
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in promtool("check", "rules", str(path))


def test_every_query_uses_only_documented_metrics(any_dashboard: dict[str, Any]) -> None:
    table = documented_metrics()
    for title, expr in targets(any_dashboard):
        names = metric_names(GRAFANA_VARIABLES.sub("5m", expr))
        assert names, f"{title}: no metric found in {expr}"
        missing = {m for m in names if not documented(m, table)}
        assert not missing, f"{title}: not in docs/alerts.md's metrics table: {missing}"


def test_backup_status_is_the_age_of_each_cronjobs_last_success(dashboard: dict[str, Any]) -> None:
    """Failed pods of a run that succeeded on a retry are no failure; a missing run is."""
    [panel] = [p for p in dashboard["panels"] if p["title"] == "Backup Status"]
    [target] = panel["targets"]
    assert metric_names(target["expr"]) == {"kube_cronjob_status_last_successful_time"}
    assert target["expr"].startswith("time() - max by (namespace, cronjob) (")
    assert 'cronjob=~"redis-backup|db-backup"' in target["expr"]
    assert "{{cronjob}}" in target["legendFormat"]
    assert panel["fieldConfig"]["defaults"]["unit"] == "s"


def test_provisioning_loads_the_dashboards_directory() -> None:
    provisioning = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yml").read_text()
    )
    [provider] = provisioning["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    datasources = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert [d["type"] for d in datasources["datasources"]] == ["prometheus"]


# Panel title -> the metrics its queries read (issue 13: active/stuck/without TTL, oldest age,
# acquisitions, ends by outcome, hold-time quantiles, evictions, events up, passes and pacing).
LOCKS_PANELS = {
    "Locks held": {"active_locks_count", "stuck_locks_count", "lock_monitor_locks_without_ttl"},
    "Oldest lock": {"lock_monitor_oldest_lock_age_seconds"},
    "Acquisitions": {"lock_monitor_lock_acquisitions_total", "lock_monitor_lock_renewals_total"},
    "Lock ends by outcome": {"lock_monitor_lock_releases_total"},
    "Hold time p50/p95/p99": {"lock_monitor_lock_hold_seconds_bucket"},
    "Evicted locks": {"lock_monitor_lock_releases_total"},
    "Events up": {"lock_monitor_events_up"},
    "Passes": {
        "lock_monitor_scan_duration_seconds",
        "lock_monitor_next_pass_delay_seconds",
        "lock_monitor_pacing_active",
    },
}


def test_the_locks_dashboard_beside_the_guides() -> None:
    locks = json.loads(LOCKS_DASHBOARD.read_text())
    guide = json.loads(DASHBOARD.read_text())
    assert locks["title"] == "Locks (lock-monitor)"
    assert locks["uid"] != guide["uid"]
    read = {
        panel["title"]: set().union(
            *(metric_names(GRAFANA_VARIABLES.sub("5m", t["expr"])) for t in panel["targets"])
        )
        for panel in locks["panels"]
    }
    assert read == LOCKS_PANELS
    assert len({panel["id"] for panel in locks["panels"]}) == len(LOCKS_PANELS)
    [hold] = [p for p in locks["panels"] if p["title"] == "Hold time p50/p95/p99"]
    assert [t["expr"].split(",")[0] for t in hold["targets"]] == [
        "histogram_quantile(0.5",
        "histogram_quantile(0.95",
        "histogram_quantile(0.99",
    ]
