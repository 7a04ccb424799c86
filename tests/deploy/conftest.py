"""The rendered deploy/k8s, shared by the manifest tests."""

from __future__ import annotations

import pytest
import yaml

from tests.deploy.helpers import K8S, Resource, find, kustomize


@pytest.fixture(scope="module")
def rendered() -> list[Resource]:
    return [doc for doc in yaml.safe_load_all(kustomize(K8S)) if doc]


@pytest.fixture(scope="module")
def pod(rendered: list[Resource]) -> Resource:
    """The Redis pod template: Redis and its two sidecars."""
    return find(rendered, "StatefulSet", "redis")["spec"]["template"]
