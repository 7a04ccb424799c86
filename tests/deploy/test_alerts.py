"""The alert rules: valid, the guide's thresholds exactly, unit-tested by promtool, documented."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict

import pytest

from tests.deploy.helpers import (
    ALERTS,
    DEPLOY,
    alert_rules,
    documented,
    documented_metrics,
    load_yaml,
    metric_names,
    promtool,
)
from tests.markdown import ALERTS_DOC, anchors, headings, section
from tests.servers import ROOT

# name -> (threshold as written at the end of the expression, for, severity); from the guide,
# plus the two alerts about the exporter itself.
EXPECTED = {
    "AppointmentResponseTimeSlow": ("> 3", "5m", "warning"),
    "LockWaitTimeHigh": ("> 1", "2m", "warning"),
    "RedisConnectionErrors": ("> 0", "1m", "critical"),
    "BackupJobFailed": ("> 0", "5m", "warning"),
    "HighLockContention": ("> 10", "5m", "warning"),
    "RedisHighMemory": ("> 0.8", "5m", "warning"),
    "StuckLocksDetected": ("stuck_locks_count > 5", "5m", "warning"),
    "RedisDown": ("redis_up == 0", "1m", "critical"),
    "AppointmentQueueTooLong": ("> 100", "10m", "warning"),
    "LockMonitorDown": ('up{job="lock-monitor"} == 0', "2m", "warning"),
    "LockMonitorStale": (") > 120", None, "warning"),
}
UNIT_TESTS = DEPLOY / "prometheus" / "tests" / "alerts_test.yml"


def minutes(duration: str) -> int:
    match = re.fullmatch(r"(\d+)m", duration)
    assert match, f"durations here are whole minutes, got {duration}"
    return int(match.group(1))


def test_rules_file_is_valid() -> None:
    output = promtool("check", "rules", str(ALERTS))
    assert "SUCCESS: 11 rules found" in output


def test_promtool_unit_tests_pass() -> None:
    assert "SUCCESS" in promtool("test", "rules", str(UNIT_TESTS))


def test_exactly_the_guides_alerts_with_its_thresholds() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert set(rules) == set(EXPECTED)
    for name, (threshold, duration, severity) in EXPECTED.items():
        rule = rules[name]
        assert threshold in " ".join(rule["expr"].split()), f"{name}: expected {threshold}"
        assert rule.get("for") == duration, name
        assert rule["labels"] == {"severity": severity}, name


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
    """Per alert: a firing case, and silence one evaluation earlier in the same test."""
    cases: dict[str, list[tuple[int, int, bool]]] = defaultdict(list)
    for index, test in enumerate(load_yaml(UNIT_TESTS)["tests"]):
        for case in test.get("alert_rule_test", []):
            fired = bool(case.get("exp_alerts"))
            cases[case["alertname"]].append((index, minutes(case["eval_time"]), fired))
    for name in EXPECTED:
        fired = {(i, t) for i, t, f in cases[name] if f}
        silent = {(i, t) for i, t, f in cases[name] if not f}
        assert fired, f"{name} never fires in a test"
        assert any((i, t - 1) in silent for i, t in fired), f"{name}: no edge case at for-1m"
        assert any(i not in {j for j, _ in fired} for i, _ in silent), (
            f"{name}: no test where it stays silent throughout"
        )


def test_prometheus_rule_is_generated_from_the_rules_file() -> None:
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "render_prometheus_rule.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_metrics_are_documented(rule: dict[str, str]) -> None:
    table = documented_metrics()
    missing = {m for m in metric_names(rule["expr"]) if not documented(m, table)}
    assert not missing, f"not in docs/alerts.md's metrics table: {missing}"
