"""deploy/examples: valid Kubernetes, options the CLI accepts, scraped under the rules' job."""

import tomllib
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml

from lock_monitor.cli import cli
from lock_monitor.cli.options import redis_settings
from tests.deploy.helpers import kustomize, rule_generator
from tests.deploy.test_k8s import selector_label
from tests.servers import ROOT

EXAMPLES = ROOT / "deploy" / "examples"
EXAMPLE = EXAMPLES / "cluster-deployment.yaml"


@pytest.fixture(scope="module")
def resources() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(EXAMPLE.read_text()) if doc]


def test_the_example_validates_strictly(resources: list[dict[str, Any]]) -> None:
    assert [r["kind"] for r in resources] == ["Deployment", "Service", "ServiceMonitor"]
    for resource in resources[:2]:  # a custom resource has no schema in kubernetes-validate
        kubernetes_validate.validate(resource, "1.30.0", strict=True)


def test_it_is_scraped_under_the_job_the_rules_select() -> None:
    """Else LockMonitorDown / LockMonitorStale / StuckLocksDetected do not cover it."""
    rendered = {doc["kind"]: doc for doc in yaml.safe_load_all(kustomize(EXAMPLES)) if doc}
    service, monitor = rendered["Service"], rendered["ServiceMonitor"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    assert job == rule_generator().JOBS["lock_monitor"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    [container] = rendered["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"lock-monitor:{version}"
    key, value = selector_label()  # selected by the same Prometheus as deploy/k8s
    assert monitor["metadata"]["labels"][key] == value


def test_the_container_runs_one_cluster_monitor(
    resources: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment, service, _ = resources
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"] == pod["metadata"]["labels"]
    (container,) = pod["spec"]["containers"]
    run = cli.get_command(click.Context(cli), "run")
    assert run is not None
    known = {
        name
        for param in run.params
        for name in ([param.envvar] if isinstance(param.envvar, str) else param.envvar or [])
    }
    for variable in container["env"]:
        assert variable["name"] in known, f"{variable['name']} is no option of `run`"
        if "value" in variable:
            monkeypatch.setenv(variable["name"], variable["value"])
    monkeypatch.setenv("REDIS_PASSWORD", "from-the-secret")
    assert container["args"] == ["run"]
    context = run.make_context("run", [])  # reads and validates the environment
    settings = redis_settings(context.params)
    assert settings.mode == "cluster"
    assert settings.password == "from-the-secret"
