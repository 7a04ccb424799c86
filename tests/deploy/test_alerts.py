"""The alert rules: valid, the guide's thresholds exactly, unit-tested by promtool, documented."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections import defaultdict

import pytest
import yaml

from tests.deploy.helpers import (
    ALERTS,
    DEPLOY,
    alert_rules,
    documented,
    documented_metrics,
    load_yaml,
    metric_names,
    promtool,
    rule_generator,
)
from tests.markdown import ALERTS_DOC, anchors, headings, section
from tests.servers import ROOT

# name -> (threshold as written at the end of the expression, label matchers left out, for,
# severity); from the guide, plus the alerts about the exporter itself, the backups' age and
# Redis' evictions and AOF writes.
EXPECTED = {
    "AppointmentResponseTimeSlow": ("> 3", "5m", "warning"),
    "LockWaitTimeHigh": ("> 1", "2m", "warning"),
    "RedisConnectionErrors": ("> 0", "1m", "critical"),
    "BackupJobFailed": ("> 0", "5m", "warning"),
    "BackupTooOld": ("> 26 * 3600", None, "warning"),
    "HighLockContention": ("> 10", "5m", "warning"),
    "RedisHighMemory": ("> 0.8", "5m", "warning"),
    "RedisKeysEvicted": ("increase(redis_evicted_keys_total[5m]) > 0", None, "warning"),
    "RedisAOFWriteError": ("redis_aof_last_write_status == 0", "1m", "critical"),
    "StuckLocksDetected": ("stuck_locks_count > 5", "5m", "warning"),
    "RedisDown": ("redis_up == 0", "1m", "critical"),
    "AppointmentQueueTooLong": ("> 100", "10m", "warning"),
    "LockMonitorDown": ("up == 0", "2m", "warning"),
    "LockMonitorStale": (") > 120", None, "warning"),
    "LockEvicted": ("increase(lock_monitor_lock_releases_total[5m]) > 0", None, "critical"),
    "LocksExpiringUnreleased": (") > 0.1", "5m", "warning"),
    "LockMonitorEventsDown": ("lock_monitor_events_up == 0", "10m", "warning"),
}
UNIT_TESTS = DEPLOY / "prometheus" / "tests" / "alerts_test.yml"
SCRAPE_INTERVAL = 30  # seconds: kube-prometheus-stack's default, and the unit tests' spacing
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SELECTOR = re.compile(r"\b([A-Za-z_:][\w:]*)\s*(\{[^}]*\})?")
_AGGREGATION = re.compile(r"\b(sum|max|min|avg|count)\s*(by\s*\(([^)]*)\))?\s*\(")


def seconds(duration: str) -> float:
    """A Prometheus duration (5m, 1h30s, 26h) in seconds."""
    parts = _DURATION.findall(duration)
    assert "".join(n + u for n, u in parts) == duration, f"not a duration: {duration}"
    return sum(int(n) * _SECONDS[u] for n, u in parts)


def without_matchers(expr: str) -> str:
    return " ".join(re.sub(r"\{[^}]*\}", "", expr).split())


def test_rules_file_is_valid() -> None:
    output = promtool("check", "rules", str(ALERTS))
    assert f"SUCCESS: {len(EXPECTED)} rules found" in output


def test_promtool_unit_tests_pass() -> None:
    assert "SUCCESS" in promtool("test", "rules", str(UNIT_TESTS))


def test_unit_tests_use_30s_samples_and_evaluations() -> None:
    tests = load_yaml(UNIT_TESTS)
    assert seconds(tests["evaluation_interval"]) == SCRAPE_INTERVAL
    for test in tests["tests"]:
        assert seconds(test["interval"]) == SCRAPE_INTERVAL, test["name"]


def test_exactly_the_guides_alerts_with_its_thresholds() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert set(rules) == set(EXPECTED)
    for name, (threshold, duration, severity) in EXPECTED.items():
        rule = rules[name]
        assert threshold in without_matchers(rule["expr"]), f"{name}: expected {threshold}"
        assert rule.get("for") == duration, name
        assert rule["labels"] == {"severity": severity}, name


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_series_is_this_deployments_job_and_namespace(rule: dict[str, str]) -> None:
    """A shared Prometheus holds other teams' series of the same names: select ours only."""
    generator = rule_generator()
    ours = {f'job="{job}", namespace="{generator.NAMESPACE}"' for job in generator.JOBS.values()}
    names = metric_names(rule["expr"])
    text = re.sub(r'"(?:[^"\\]|\\.)*"', lambda m: m.group().replace("{", "("), rule["expr"])
    for match in _SELECTOR.finditer(text):
        if match.group(1) in names:
            matchers = match.group(2) or "{}"
            assert any(selector in matchers for selector in ours), f"{match.group()} is not ours"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_aggregations_keep_the_namespace_and_windows_span_four_scrapes(
    rule: dict[str, str],
) -> None:
    """Alertmanager routes on `namespace`; Prometheus 3 leaves a window's first sample out."""
    for match in _AGGREGATION.finditer(rule["expr"]):
        assert "namespace" in (match.group(3) or ""), f"{match.group()} drops it"
    for window in re.findall(r"\[(\w+)\]", rule["expr"]):
        assert seconds(window) >= 4 * SCRAPE_INTERVAL, f"[{window}] is under four scrapes"


def test_the_generator_fills_in_other_selectors_and_runbooks() -> None:
    generator = rule_generator()
    jobs = generator.JOBS | {"backend": "shop-api"}
    text = generator.render_rules("shop", jobs, "https://wiki.example.com/runbooks/")
    rules = {r["alert"]: r for g in yaml.safe_load(text)["groups"] for r in g["rules"]}
    assert "${" not in text
    assert 'job="shop-api", namespace="shop"' in rules["HighLockContention"]["expr"]
    assert 'job="lock-monitor", namespace="shop"' in rules["LockMonitorDown"]["expr"]
    assert 'namespace="default"' not in text
    for name, rule in rules.items():
        url = rule["annotations"]["runbook_url"]
        assert url == f"https://wiki.example.com/runbooks#{name.lower()}"
    unfiltered = generator.render_rules("", generator.JOBS, "https://x")
    assert "namespace=" not in unfiltered.replace("namespace=~", "")


def test_the_default_runbook_base_is_the_declared_repository() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    repository = project["urls"]["Repository"]
    assert rule_generator().default_runbook_base() == f"{repository}/blob/main/docs/alerts.md"
    for rule in alert_rules():
        assert rule["annotations"]["runbook_url"].startswith(repository + "/")


def test_every_alert_is_annotated_and_has_a_runbook_section() -> None:
    runbooks = {title for level, title in headings(section(ALERTS_DOC, "Runbooks")) if level == 3}
    for rule in alert_rules():
        annotations = rule["annotations"]
        assert annotations["summary"]
        assert annotations["description"]
        page, _, anchor = annotations["runbook_url"].rpartition("#")
        assert page.endswith("/docs/alerts.md"), annotations["runbook_url"]
        assert anchor == rule["alert"].lower()
        assert rule["alert"] in runbooks, f"docs/alerts.md has no '### {rule['alert']}' runbook"
        assert anchor in anchors(ALERTS_DOC)


def test_every_alert_fires_in_a_test_and_is_silent_just_before() -> None:
    """Per alert: a firing case, and silence one evaluation (30 s) earlier in the same test."""
    cases: dict[str, list[tuple[int, float, bool]]] = defaultdict(list)
    for index, test in enumerate(load_yaml(UNIT_TESTS)["tests"]):
        for case in test.get("alert_rule_test", []):
            fired = bool(case.get("exp_alerts"))
            cases[case["alertname"]].append((index, seconds(case["eval_time"]), fired))
    for name in EXPECTED:
        fired = {(i, t) for i, t, f in cases[name] if f}
        silent = {(i, t) for i, t, f in cases[name] if not f}
        assert fired, f"{name} never fires in a test"
        assert any((i, t - SCRAPE_INTERVAL) in silent for i, t in fired), f"{name}: no edge case"
        assert any(i not in {j for j, _ in fired} for i, _ in silent), (
            f"{name}: no test where it stays silent throughout"
        )


def render(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEPLOY / "render_prometheus_rule.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_rule_file_and_prometheus_rule_are_generated_from_the_template() -> None:
    result = render("--check")
    assert result.returncode == 0, result.stdout + result.stderr
    stale = render("--check", "--namespace", "shop")
    assert stale.returncode == 1
    assert "alerts.yml is out of date" in stale.stdout
    assert "prometheus-rule.yaml is out of date" in stale.stdout


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_metrics_are_documented(rule: dict[str, str]) -> None:
    table = documented_metrics()
    missing = {m for m in metric_names(rule["expr"]) if not documented(m, table)}
    assert not missing, f"not in docs/alerts.md's metrics table: {missing}"
