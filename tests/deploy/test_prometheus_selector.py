"""deploy/k8s/check-prometheus-selector.py, offline: canned `kubectl get` output, our render."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.helpers import kustomize
from tests.servers import ROOT

SCRIPT = ROOT / "deploy" / "k8s" / "check-prometheus-selector.py"
ALL_NAMESPACES: dict[str, Any] = {}


def prometheus(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name}, "spec": spec}


def stack(release: str, **spec: Any) -> dict[str, Any]:
    """A Prometheus as kube-prometheus-stack creates it: release label, every namespace."""
    selector = {"matchLabels": {"release": release}}
    return prometheus(
        "monitoring",
        f"{release}-kube-prometheus-prometheus",
        serviceMonitorSelector=selector,
        serviceMonitorNamespaceSelector=ALL_NAMESPACES,
        ruleSelector=selector,
        ruleNamespaceSelector=ALL_NAMESPACES,
    ) | ({"spec": spec} if spec else {})


NAMESPACES = {
    "items": [
        {"metadata": {"name": "default", "labels": {"kubernetes.io/metadata.name": "default"}}},
        {"metadata": {"name": "shop", "labels": {"team": "shop"}}},
    ]
}


def check(
    tmp_path: Path, items: list[dict[str, Any]], *args: str
) -> subprocess.CompletedProcess[str]:
    files = {
        "prometheus.json": json.dumps({"items": items}),
        "namespaces.json": json.dumps(NAMESPACES),
        "manifests.yaml": kustomize(ROOT / "deploy" / "k8s"),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--prometheus-json",
            str(tmp_path / "prometheus.json"),
            "--namespaces-json",
            str(tmp_path / "namespaces.json"),
            "--manifests",
            str(tmp_path / "manifests.yaml"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_kube_prometheus_stack_with_the_release_we_label_selects_all(tmp_path: Path) -> None:
    result = check(tmp_path, [stack("other"), stack("prometheus")])
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "Prometheus monitoring/prometheus-kube-prometheus-prometheus: selects all" in lines
    assert "Prometheus monitoring/other-kube-prometheus-prometheus: does NOT select all" in lines
    for kind, name in [
        ("ServiceMonitor", "lock-monitor"),
        ("ServiceMonitor", "redis-exporter"),
        ("PrometheusRule", "lock-monitor-alerts"),
    ]:
        assert f"  selects {kind} default/{name}" in lines
        missed = f"  misses  {kind} default/{name}: "
        assert any(line.startswith(missed) and '"release": "other"' in line for line in lines)


def test_a_wrong_release_label_selects_nothing_and_fails(tmp_path: Path) -> None:
    result = check(tmp_path, [stack("kps")])
    assert result.returncode == 1
    assert "No Prometheus selects all of them" in result.stdout


@pytest.mark.parametrize(
    ("spec", "selected"),
    [
        # no selector at all: the Operator selects nothing
        ({}, False),
        # empty selectors: everything, in every namespace
        (
            {
                "serviceMonitorSelector": {},
                "serviceMonitorNamespaceSelector": {},
                "ruleSelector": {},
                "ruleNamespaceSelector": {},
            },
            True,
        ),
        # no namespace selector: its own namespace only (monitoring, not ours)
        ({"serviceMonitorSelector": {}, "ruleSelector": {}}, False),
        # matchExpressions
        (
            {
                "serviceMonitorSelector": {
                    "matchExpressions": [
                        {"key": "release", "operator": "In", "values": ["prometheus", "x"]},
                        {"key": "skip", "operator": "DoesNotExist"},
                    ]
                },
                "serviceMonitorNamespaceSelector": {},
                "ruleSelector": {"matchExpressions": [{"key": "release", "operator": "Exists"}]},
                "ruleNamespaceSelector": {},
            },
            True,
        ),
        (
            {
                "serviceMonitorSelector": {
                    "matchExpressions": [
                        {"key": "release", "operator": "NotIn", "values": ["prometheus"]}
                    ]
                },
                "serviceMonitorNamespaceSelector": {},
                "ruleSelector": {},
                "ruleNamespaceSelector": {},
            },
            False,
        ),
    ],
)
def test_operator_selector_semantics(tmp_path: Path, spec: dict[str, Any], selected: bool) -> None:
    result = check(tmp_path, [prometheus("monitoring", "p", **spec)])
    assert result.returncode == (0 if selected else 1), result.stdout


def test_namespace_selectors_read_the_namespaces_labels(tmp_path: Path) -> None:
    by_team = {"matchLabels": {"team": "shop"}}
    spec = {
        "serviceMonitorSelector": {},
        "serviceMonitorNamespaceSelector": by_team,
        "ruleSelector": {},
        "ruleNamespaceSelector": by_team,
    }
    items = [prometheus("monitoring", "p", **spec)]
    assert check(tmp_path, items, "--namespace", "shop").returncode == 0
    assert check(tmp_path, items, "--namespace", "default").returncode == 1


def test_unreadable_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--prometheus-json", str(tmp_path / "broken.json")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("check-prometheus-selector: cannot read the input:")
