"""deploy/examples/cluster-deployment.yaml: valid Kubernetes, and options the CLI accepts."""

from typing import Any

import kubernetes_validate
import pytest
import yaml

from lock_monitor.cli import cli
from lock_monitor.cli.options import redis_settings
from tests.servers import ROOT

EXAMPLE = ROOT / "deploy" / "examples" / "cluster-deployment.yaml"


@pytest.fixture(scope="module")
def resources() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(EXAMPLE.read_text()) if doc]


def test_the_example_validates_strictly(resources: list[dict[str, Any]]) -> None:
    assert [r["kind"] for r in resources] == ["Deployment", "Service"]
    for resource in resources:
        kubernetes_validate.validate(resource, "1.30.0", strict=True)


def test_the_container_runs_one_cluster_monitor(
    resources: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment, service = resources
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"] == pod["metadata"]["labels"]
    (container,) = pod["spec"]["containers"]
    run = cli.commands["run"]
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
