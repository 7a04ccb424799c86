"""The rendered deploy/k8s, and Redis started as its manifest starts it, shared by the tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import yaml

from tests.deploy.helpers import K8S, Resource, container, find, kustomize
from tests.servers import VALKEY, free_port, wait_for

# Fixtures that start a server (Valkey, and redis_exporter beside it): a test using one is an
# integration test, so that `pytest -m "not integration"` starts none; the manifests' own tests
# are not.
SERVER_FIXTURES = {"manifest_redis"}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and SERVER_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def rendered() -> list[Resource]:
    return [doc for doc in yaml.safe_load_all(kustomize(K8S)) if doc]


@pytest.fixture(scope="module")
def pod(rendered: list[Resource]) -> Resource:
    """The Redis pod template: Redis and its two sidecars."""
    return find(rendered, "StatefulSet", "redis")["spec"]["template"]


def redis_acl_secret(default_password_file: Path) -> dict[str, str]:
    """The keys of the Secret redis-acl as deploy/k8s/redis-acl.py makes it."""
    script = K8S / "redis-acl.py"
    command = [sys.executable, str(script), "--default-password-file", str(default_password_file)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=60).stdout
    secret = yaml.safe_load(out)
    assert (secret["kind"], secret["metadata"]["name"]) == ("Secret", "redis-acl")
    return dict(secret["stringData"])


def mount_secret(pod_spec: Resource, name: str, keys: dict[str, str], root: Path) -> dict[str, str]:
    """Write the Secret keys container `name` mounts under `root`: container path -> local path."""
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    paths = {}
    for mount in container(pod_spec, name).get("volumeMounts", []):
        source = volumes.get(mount["name"], {}).get("secret")
        if not source:
            continue
        for item in source["items"]:
            local = root / mount["name"] / item["path"]
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(keys[item["key"]])
            paths[f"{mount['mountPath']}/{item['path']}"] = str(local)
    return paths


@dataclass
class ManifestRedis:
    """A Redis started with the manifest's arguments and users; the Secret it was given."""

    port: int
    default_password: str
    secret: dict[str, str]

    def client(self, username: str | None = None, password: str | None = None) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            username=username,
            password=password or self.default_password,
            decode_responses=True,
        )


@pytest.fixture
def manifest_redis(pod: Resource, tmp_path: Path) -> Iterator[ManifestRedis]:
    """The redis container's command and arguments, its ACL file made by redis-acl.py, on a
    loopback port. Valkey stands in for the image's Redis 7.2 (Debian's 7.0 lacks commands the
    ACL file names)."""
    spec = container(pod["spec"], "redis")
    assert spec["command"] == ["redis-server"]
    default_password = "manifest-test-pw"
    (tmp_path / "default.pw").write_text(default_password + "\n")
    secret = redis_acl_secret(tmp_path / "default.pw")
    files = mount_secret(pod["spec"], "redis", secret, tmp_path / "mounts")
    port = free_port()
    replace = {"/data": str(tmp_path), "6379": str(port), **files}
    args = [replace.get(arg, arg) for arg in spec["args"]]
    log = tmp_path / "redis.log"
    process = subprocess.Popen(
        # no 5 s wait for other replicas before the backup's SYNC snapshot: a test only
        [
            str(VALKEY),
            *args,
            "--bind",
            "127.0.0.1",
            "--logfile",
            str(log),
            "--repl-diskless-sync-delay",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = ManifestRedis(port, default_password, secret)
    try:
        wait_for(server.client().ping, timeout=10, what=f"the manifest's Redis ({log})")
        yield server
    finally:
        process.kill()
        process.wait(timeout=10)
