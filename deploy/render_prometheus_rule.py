"""Render the alert rules for this deployment from deploy/prometheus/alerts.template.yml.

The template is the one source of the rules. This fills in which series are ours (the job and
namespace of each exporter: the settings below are the one place to change them) and where the
runbooks are, then writes the rules twice so that plain Prometheus and the Prometheus Operator
can never disagree:

    deploy/prometheus/alerts.yml       rule file (plain Prometheus, docker-compose.yml)
    deploy/k8s/prometheus-rule.yaml    the same groups as a PrometheusRule

    python deploy/render_prometheus_rule.py          # rewrite both after editing the template
    python deploy/render_prometheus_rule.py --check  # exit 1 if either is out of date (CI)
    python deploy/render_prometheus_rule.py --namespace shop --job backend=shop-api \\
        --runbook-base-url https://wiki.example.com/lock-monitor/alerts

With options, run --check with the same options.
"""

from __future__ import annotations

import argparse
import re
import string
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent
TEMPLATE = DEPLOY / "prometheus" / "alerts.template.yml"
RULES = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS_RULE = DEPLOY / "k8s" / "prometheus-rule.yaml"

# The namespace this stack runs in (the label `namespace` of its series); "" for no filter.
NAMESPACE = "default"
# Template placeholder -> the job label of that exporter's series. With the Prometheus Operator
# the job is the Service's name; kube-prometheus-stack scrapes kube-state-metrics as below.
JOBS = {
    "lock_monitor": "lock-monitor",
    "redis_exporter": "redis-exporter",
    "backend": "backend",
    "kube_state_metrics": "kube-state-metrics",
}


def default_runbook_base() -> str:
    """docs/alerts.md in the repository that pyproject.toml declares."""
    project = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]
    return project["urls"]["Repository"].rstrip("/") + "/blob/main/docs/alerts.md"


class _Placeholders(string.Template):
    """Only ${name} is a placeholder: `$labels`, `$value` and `$1` belong to Prometheus."""

    pattern = r"\$\{(?P<braced>[a-z_]+)\}|(?P<escaped>(?!))|(?P<named>(?!))|(?P<invalid>(?!))"


class _BlockDumper(yaml.SafeDumper):
    """Dumps multi-line strings (PromQL) as literal blocks, so the output stays readable."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def selectors(namespace: str, jobs: dict[str, str]) -> dict[str, str]:
    """Placeholder -> the label matchers selecting that exporter's series of this deployment."""
    scope = f', namespace="{namespace}"' if namespace else ""
    return {name: f'job="{job}"{scope}' for name, job in jobs.items()}


def render_rules(namespace: str, jobs: dict[str, str], runbooks: str) -> str:
    """The rule file's text: the template's groups with every placeholder filled in."""
    body = TEMPLATE.read_text()
    body = body[re.search(r"^groups:", body, re.M).start() :]  # type: ignore[union-attr]
    values = selectors(namespace, jobs) | {"runbooks": runbooks.rstrip("/")}
    header = (
        "# GENERATED from alerts.template.yml by deploy/render_prometheus_rule.py, which also\n"
        "# holds the selectors and the runbook URL. Do not edit: change those and run it.\n"
    )
    return header + _Placeholders(body).substitute(values)


def render_prometheus_rule(rules: str) -> str:
    """The PrometheusRule holding the groups of the rule file `rules`."""
    resource: dict[str, Any] = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "lock-monitor-alerts",
            # The label a Prometheus selects rules by is set by deploy/k8s/components/prometheus.
            "labels": {"app": "lock-monitor"},
        },
        "spec": {"groups": yaml.safe_load(rules)["groups"]},
    }
    header = (
        "# GENERATED from deploy/prometheus/alerts.template.yml by\n"
        "# deploy/render_prometheus_rule.py. Do not edit: change the template and run it.\n"
    )
    return header + yaml.dump(
        resource, Dumper=_BlockDumper, sort_keys=False, width=1000, allow_unicode=True
    )


def _job(text: str) -> tuple[str, str]:
    name, _, job = text.partition("=")
    if name not in JOBS or not job:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(JOBS)}=JOB, got {text!r}")
    return name, job


def _holds(path: Path, text: str) -> bool:
    return path.exists() and path.read_text() == text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if an output is stale")
    parser.add_argument("--namespace", default=NAMESPACE, help="namespace label ('' for any)")
    parser.add_argument(
        "--job", type=_job, action="append", default=[], help="PLACEHOLDER=JOB, e.g. backend=api"
    )
    parser.add_argument("--runbook-base-url", help="URL of the runbooks page (docs/alerts.md)")
    args = parser.parse_args(argv)
    rules = render_rules(
        args.namespace, JOBS | dict(args.job), args.runbook_base_url or default_runbook_base()
    )
    outputs = {RULES: rules, PROMETHEUS_RULE: render_prometheus_rule(rules)}
    if args.check:
        stale = [path for path, text in outputs.items() if not _holds(path, text)]
        for path in stale:
            print(f"{path} is out of date: run python deploy/render_prometheus_rule.py")
        return 1 if stale else 0
    for path, text in outputs.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
