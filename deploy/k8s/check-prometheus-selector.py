#!/usr/bin/env python3
"""Print which Prometheus (of the Operator) would select this stack's ServiceMonitors and rules.

A Prometheus loads a ServiceMonitor or PrometheusRule only when its label selector and namespace
selector both match it; with a wrong label nothing is scraped and no alert can fire, silently.
This reads the Prometheus objects of the cluster and the rendered manifests and says, for each
Prometheus, what it selects and why not:

    python deploy/k8s/check-prometheus-selector.py                  # asks the cluster (kubectl)
    python deploy/k8s/check-prometheus-selector.py --namespace shop  # where you apply deploy/k8s
    kubectl get prometheus -A -o json > p.json && kubectl get namespaces -o json > ns.json
    python deploy/k8s/check-prometheus-selector.py \
        --prometheus-json p.json --namespaces-json ns.json

Exit 0 when one Prometheus selects all of them, 1 when none does, 2 when the input cannot be
read (a file, or kubectl).
Needs Python 3 with PyYAML and, without the files, kubectl.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
# Our resource kind -> the Prometheus fields selecting it (objects, namespaces).
SELECTORS = {
    "ServiceMonitor": ("serviceMonitorSelector", "serviceMonitorNamespaceSelector"),
    "PodMonitor": ("podMonitorSelector", "podMonitorNamespaceSelector"),
    "PrometheusRule": ("ruleSelector", "ruleNamespaceSelector"),
}
Object = dict[str, Any]


def matches(selector: Object | None, labels: dict[str, str]) -> bool:
    """Kubernetes label selector semantics; None (a missing selector) matches nothing."""
    if selector is None:
        return False
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def namespace_matches(selector: Object | None, own: str, namespace: str, labels: Object) -> bool:
    """The Operator's rule: no namespace selector means the Prometheus' own namespace only."""
    if selector is None:
        return namespace == own
    return matches(selector, labels.get(namespace, {"kubernetes.io/metadata.name": namespace}))


def explain(prometheus: Object, ours: list[Object], namespaces: Object) -> tuple[bool, list[str]]:
    """Whether this Prometheus selects every one of `ours`, and a line per resource."""
    meta, spec = prometheus["metadata"], prometheus.get("spec", {})
    lines, selects_all = [], True
    for resource in ours:
        kind, name = resource["kind"], resource["metadata"]["name"]
        namespace = resource["metadata"]["namespace"]
        by_labels, by_namespace = SELECTORS[kind]
        label_ok = matches(spec.get(by_labels), resource["metadata"].get("labels", {}))
        namespace_ok = namespace_matches(
            spec.get(by_namespace), meta["namespace"], namespace, namespaces
        )
        if label_ok and namespace_ok:
            lines.append(f"  selects {kind} {namespace}/{name}")
            continue
        selects_all = False
        why = []
        if not label_ok:
            why.append(f"{by_labels} {json.dumps(spec.get(by_labels))}")
        if not namespace_ok:
            why.append(f"{by_namespace} {json.dumps(spec.get(by_namespace))}")
        lines.append(f"  misses  {kind} {namespace}/{name}: " + "; ".join(why))
    return selects_all, lines


def kubectl(*args: str) -> str:
    try:
        return subprocess.run(
            ["kubectl", *args], check=True, capture_output=True, text=True, timeout=60
        ).stdout
    except subprocess.CalledProcessError as error:
        last = (error.stderr.strip().splitlines() or ["failed"])[-1]
        raise OSError(f"kubectl {' '.join(args)}: {last}") from None
    except subprocess.SubprocessError as error:
        raise OSError(f"kubectl {' '.join(args)}: {error}") from None


def read(path: str | None, *kubectl_args: str) -> str:
    return Path(path).read_text() if path else kubectl(*kubectl_args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--prometheus-json", help="kubectl get prometheus -A -o json output")
    parser.add_argument("--namespaces-json", help="kubectl get namespaces -o json output")
    parser.add_argument("--manifests", help="rendered manifests (default: kubectl kustomize)")
    parser.add_argument("--namespace", default="default", help="where deploy/k8s is applied")
    args = parser.parse_args(argv)
    try:
        prometheuses = json.loads(read(args.prometheus_json, "get", "prometheus", "-A", "-ojson"))
        namespace_list = json.loads(read(args.namespaces_json, "get", "namespaces", "-ojson"))
        documents = yaml.safe_load_all(read(args.manifests, "kustomize", str(HERE)))
        ours = [doc for doc in documents if doc and doc.get("kind") in SELECTORS]
    except (OSError, ValueError, yaml.YAMLError) as error:
        print(f"check-prometheus-selector: cannot read the input: {error}", file=sys.stderr)
        return 2
    for resource in ours:
        resource["metadata"].setdefault("namespace", args.namespace)
    namespaces = {
        item["metadata"]["name"]: item["metadata"].get("labels", {})
        for item in namespace_list.get("items", [])
    }
    found = False
    for prometheus in prometheuses.get("items", []):
        selects_all, lines = explain(prometheus, ours, namespaces)
        meta = prometheus["metadata"]
        verdict = "selects all" if selects_all else "does NOT select all"
        print(f"Prometheus {meta['namespace']}/{meta['name']}: {verdict}")
        print("\n".join(lines))
        found = found or selects_all
    if not found:
        print(
            "No Prometheus selects all of them: set the label in "
            "deploy/k8s/components/prometheus to one that a Prometheus selects."
        )
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
