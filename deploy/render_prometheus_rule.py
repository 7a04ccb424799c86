"""Wrap deploy/prometheus/alerts.yml into the PrometheusRule deploy/k8s/prometheus-rule.yaml.

The rules file is the one source of truth; the PrometheusRule is generated so that plain
Prometheus and the Prometheus Operator can never disagree. Run it after editing the rules:

    python deploy/render_prometheus_rule.py          # rewrite the PrometheusRule
    python deploy/render_prometheus_rule.py --check  # exit 1 if it is out of date (CI)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
SOURCE = DEPLOY / "prometheus" / "alerts.yml"
TARGET = DEPLOY / "k8s" / "prometheus-rule.yaml"
HEADER = (
    "# GENERATED from deploy/prometheus/alerts.yml by deploy/render_prometheus_rule.py.\n"
    "# Do not edit: change alerts.yml and run `python deploy/render_prometheus_rule.py`.\n"
)


class _BlockDumper(yaml.SafeDumper):
    """Dumps multi-line strings (PromQL) as literal blocks, so the output stays readable."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def render(source: Path = SOURCE) -> str:
    """The PrometheusRule text for the rule groups in `source`."""
    rules = yaml.safe_load(source.read_text())
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "lock-monitor-alerts",
            # kube-prometheus-stack selects rules by its release label; adjust like the
            # ServiceMonitors in servicemonitors.yaml.
            "labels": {"app": "lock-monitor", "release": "prometheus"},
        },
        "spec": {"groups": rules["groups"]},
    }
    return HEADER + yaml.dump(
        resource, Dumper=_BlockDumper, sort_keys=False, width=1000, allow_unicode=True
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the target is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET} is out of date: run python deploy/render_prometheus_rule.py")
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
