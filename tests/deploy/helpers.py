"""Shared pieces of the deployment tests: promtool, PromQL metric names, the documented metrics."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from tests.markdown import ALERTS_DOC, section
from tests.servers import ROOT, monitor_command, monitor_env, require_binary

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "appointment-performance.json"
LOCKS_DASHBOARD = DEPLOY / "grafana" / "dashboards" / "locks.json"  # lock-monitor's own

_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def kustomize(directory: Path) -> str:
    """`kubectl kustomize` of a directory: the manifests as `kubectl apply -k` sends them."""
    kubectl = require_binary("kubectl", also_in_venv=True)
    return subprocess.run(
        [kubectl, "kustomize", str(directory)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout


Resource = dict[str, Any]


def find(resources: list[Resource], kind: str, name: str) -> Resource:
    matches = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected exactly one {kind}/{name}, found {len(matches)}"
    return matches[0]


def container(pod_spec: Resource, name: str) -> Resource:
    matches = [c for c in pod_spec["containers"] if c["name"] == name]
    assert matches, f"no container {name}"
    return matches[0]


def env_of(c: Resource) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def secret_ref(name: str = "redis-secret", key: str = "password") -> Resource:
    return {"secretKeyRef": {"name": name, "key": key}}


def quantity(text: str | int) -> float:
    """A Kubernetes quantity (500m, 384Mi, 2Gi, 1) as a number of cores or bytes."""
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text))
    assert match, f"not a quantity: {text}"
    return float(match.group(1)) * (suffixes[match.group(2)] if match.group(2) else 1)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def promtool(*args: str) -> str:
    """Run promtool; fail the test with its output when it does not succeed."""
    result = subprocess.run(
        [require_binary("promtool"), *args], capture_output=True, text=True, timeout=60
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


@cache
def rule_generator() -> ModuleType:
    """deploy/render_prometheus_rule.py as a module: its selectors and render functions."""
    spec = importlib.util.spec_from_file_location(
        "render_prometheus_rule", DEPLOY / "render_prometheus_rule.py"
    )
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (functions, labels, keywords and numbers removed).

    A deliberately small lexer: the expressions have already been checked by promtool.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+\w+", " ", text)
    text = re.sub(r"(?<![\w:.])\d[\w.+-]*", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][\w:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def documented_metrics() -> dict[str, str]:
    """Metric name -> exporter, from docs/alerts.md's table of metrics the rules rely on."""
    rows = re.findall(
        r"^\|\s*`([\w:]+)`\s*\|[^|\n]*\|\s*([^|\n]+?)\s*\|",
        section(ALERTS_DOC, "Metrics the alerts and dashboard rely on"),
        re.M,
    )
    return dict(rows)


def documented(name: str, table: dict[str, str]) -> bool:
    """Whether the table lists `name`, or the histogram it is a series of."""
    if name in table:
        return True
    return any(name.endswith(s) and name.removesuffix(s) in table for s in _HISTOGRAM_SUFFIXES)


@cache
def monitor_env_vars() -> frozenset[str]:
    """The environment variables `lock-monitor run` reads, as its --help lists them."""
    result = subprocess.run(
        monitor_command("run", "--help"),
        env=monitor_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return frozenset(re.findall(r"LOCK_MONITOR_[A-Z_]+", result.stdout)) | {"REDIS_PASSWORD"}


def unknown_monitor_env(environment: dict[str, object]) -> set[str]:
    """Variables set for the exporter that it does not read (a typo, a renamed option)."""
    return set(environment) - monitor_env_vars()
