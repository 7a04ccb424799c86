"""Each client of the Redis pod is its own minimal ACL user, with its password in a file.

Redis runs with the manifest's arguments and the ACL file deploy/k8s/redis-acl.py makes; each
client runs with its container's environment and its mounted keys of that Secret, as in the
cluster: lock-monitor, redis_exporter, the redis-backup CronJob.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from tests.deploy.conftest import ManifestRedis, mount_secret
from tests.deploy.helpers import K8S, Resource, container, find
from tests.markdown import CONFIGURATION_DOC, DOCS
from tests.servers import (
    Metrics,
    free_port,
    monitor_env,
    require_binary,
    run_monitor,
    running_monitor,
    wait_for,
)

EXAMPLE = K8S / "redis-acl.example.yaml"
EXAMPLE_SECRET = yaml.safe_load(EXAMPLE.read_text())


def client_env(pod_spec: Resource, name: str, server: ManifestRedis, root: Path) -> dict[str, str]:
    """Container `name`'s environment, its Secret files written under `root`, aimed at `server`."""
    files = mount_secret(pod_spec, name, server.secret, root)
    env = {}
    for variable in container(pod_spec, name).get("env", []):
        assert "valueFrom" not in variable, f"{variable['name']}: passwords come as files"
        value = files.get(variable["value"], variable["value"])
        value = value.replace("localhost:6379", f"localhost:{server.port}")
        value = value.replace("redis://redis:6379", f"redis://127.0.0.1:{server.port}")
        env[variable["name"]] = value
    return env


def test_no_container_gets_a_password_in_its_environment(rendered: list[Resource]) -> None:
    """Environment variables show in `kubectl describe`, crash dumps and /proc/*/environ."""
    for resource in rendered:
        for c in resource_containers(resource):
            for variable in c.get("env", []):
                assert "secretKeyRef" not in variable.get("valueFrom", {}) or (
                    c["name"] == "redis" and variable["name"] == "REDIS_PASSWORD"
                ), f"{resource['metadata']['name']}/{c['name']}: {variable['name']}"


def resource_containers(resource: Resource) -> list[Resource]:
    spec = resource.get("spec", {})
    template = spec.get("jobTemplate", {}).get("spec", spec).get("template", {})
    return list(template.get("spec", {}).get("containers", []))


def test_the_example_is_what_the_script_makes_with_placeholders() -> None:
    """The example in the repository carries placeholders only, never a real password."""
    script = [sys.executable, str(K8S / "redis-acl.py"), "--example"]
    out = subprocess.run(script, check=True, capture_output=True, text=True, timeout=60).stdout
    assert EXAMPLE.read_text() == out, "run: python deploy/k8s/redis-acl.py --example > ..."
    example = yaml.safe_load(EXAMPLE.read_text())
    assert "EXAMPLE ONLY" in out
    data = example["stringData"]
    for key in ("lockmon-password", "backup-password"):
        assert data[key].startswith("CHANGE-ME-")
    assert all(
        p.startswith("CHANGE-ME-") for p in json.loads(data["exporter-passwords.json"]).values()
    )
    secret_example = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    default = secret_example["stringData"]["password"]
    digest = hashlib.sha256(default.encode()).hexdigest()
    assert f"user default on #{digest} " in data["users.acl"], "the same default password"
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert EXAMPLE.name not in kustomization["resources"]


@pytest.mark.parametrize(
    ("user", "page"), [("lockmon", CONFIGURATION_DOC), ("backup", DOCS / "backups.md")]
)
def test_the_users_are_the_documented_minimal_users(user: str, page: Path) -> None:
    """The ACL file grants what the docs' ACL SETUSER line grants (plus NO-TOUCH on 7.2+)."""
    [line] = [
        line for line in page.read_text().splitlines() if line.startswith(f"ACL SETUSER {user} ")
    ]
    documented = {word for word in line.split()[4:] if not word.startswith(">")}
    [acl] = [
        line
        for line in EXAMPLE_SECRET["stringData"]["users.acl"].splitlines()
        if line.startswith(f"user {user} ")
    ]
    granted = set(acl.split()[4:])
    assert documented <= granted
    assert granted - documented <= {"+client|no-touch"}


def test_the_monitor_reads_locks_as_lockmon_and_can_write_nothing(
    pod: Resource, manifest_redis: ManifestRedis, tmp_path: Path
) -> None:
    manifest_redis.client().set("lock:appointment:1", "1700000000000", px=60_000)
    env = client_env(pod["spec"], "lock-monitor", manifest_redis, tmp_path)
    assert env["LOCK_MONITOR_REDIS_USERNAME"] == "lockmon"
    result = run_monitor("locks", "--json", env=monitor_env(**env))
    assert result.returncode == 3, result.stderr  # read, and the lock (from 2023) is stuck
    assert [lock["key"] for lock in json.loads(result.stdout)["locks"]] == ["lock:appointment:1"]
    lockmon = manifest_redis.client("lockmon", manifest_redis.secret["lockmon-password"])
    with pytest.raises(redis.exceptions.NoPermissionError):
        lockmon.set("lock:appointment:2", "1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        lockmon.get("session:1")


def test_the_monitor_follows_the_lock_events_as_lockmon(
    pod: Resource, manifest_redis: ManifestRedis, tmp_path: Path
) -> None:
    """The manifest's Redis publishes them and lockmon may subscribe: events are live. (It
    may not read the setting with CONFIG GET: the first event tells.)"""
    env = client_env(pod["spec"], "lock-monitor", manifest_redis, tmp_path)
    env["LOCK_MONITOR_LISTEN_ADDRESS"] = "127.0.0.1"  # the test picks the port
    with running_monitor(env=monitor_env(**env)) as monitor:

        def events_state() -> str:
            return str(json.loads(monitor.get("/locks")[1])["events"]["state"])

        wait_for(lambda: events_state() == "unverified", what="subscribed")
        manifest_redis.client().set("lock:appointment:1", "1700000000000", px=60_000)
        wait_for(lambda: monitor.value("lock_monitor_events_up") == 1, what="events up")
        assert monitor.value("lock_monitor_lock_acquisitions_total") == 1


@contextmanager
def exporter(env: dict[str, str], log: Path) -> Iterator[str]:
    """prometheus-redis-exporter with this environment; yields its base URL."""
    binary = require_binary("prometheus-redis-exporter")
    address = f"127.0.0.1:{free_port()}"
    env = env | {"REDIS_EXPORTER_WEB_LISTEN_ADDRESS": address}
    with log.open("wb") as output:
        process = subprocess.Popen([binary], env=env, stdout=output, stderr=output)
    try:
        wait_for(
            lambda: Metrics.scrape(f"http://{address}/metrics"), what="redis_exporter /metrics"
        )
        yield f"http://{address}"
    finally:
        process.kill()
        process.wait(timeout=10)


def test_redis_exporter_reads_its_password_file_and_gives_it_to_no_other_target(
    pod: Resource, manifest_redis: ManifestRedis, tmp_path: Path
) -> None:
    env = client_env(pod["spec"], "redis-exporter", manifest_redis, tmp_path)
    password_file = Path(env["REDIS_PASSWORD_FILE"])
    local = f"localhost:{manifest_redis.port}"
    password_file.write_text(password_file.read_text().replace("localhost:6379", local))
    assert env["REDIS_USER"] == "exporter"
    with exporter(env, tmp_path / "exporter.log") as url:
        metrics = Metrics.scrape(f"{url}/metrics")
        # another address of the same server: the password map has no entry for it
        other = Metrics.scrape(f"{url}/scrape?target=redis://127.0.0.1:{manifest_redis.port}")
    assert metrics.value("redis_up") == 1
    for name in (
        "redis_aof_last_write_status",
        "redis_evicted_keys_total",
        "redis_memory_max_bytes",
    ):
        assert name in metrics, f"{name}: the alerts need it"
    assert other.value("redis_up") == 0
    assert "NOPERM" not in (tmp_path / "exporter.log").read_text()


def test_the_backup_job_syncs_as_backup_and_can_read_no_key(
    rendered: list[Resource], manifest_redis: ManifestRedis, tmp_path: Path
) -> None:
    cronjob = find(rendered, "CronJob", "redis-backup")
    pod_spec = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    manifest_redis.client().set("config:version", "7")
    env = client_env(pod_spec, "redis-backup", manifest_redis, tmp_path)
    assert env["LOCK_MONITOR_REDIS_USERNAME"] == "backup"
    env["LOCK_MONITOR_DEST"] = str(tmp_path / "backup")
    (tmp_path / "backup").mkdir()
    args: list[Any] = container(pod_spec, "redis-backup")["args"]
    result = run_monitor(*args, env=monitor_env(**env))
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "backup").glob("redis-backup-*.rdb"))
    backup = manifest_redis.client("backup", manifest_redis.secret["backup-password"])
    with pytest.raises(redis.exceptions.NoPermissionError):
        backup.get("config:version")
