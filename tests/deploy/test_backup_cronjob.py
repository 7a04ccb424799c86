"""deploy/k8s/backup-cronjob.yaml: the guide's contract (names, schedules, retention, sizes)."""

from __future__ import annotations

from typing import Any

import click
import kubernetes_validate
import pytest
import yaml

from lock_monitor.cli import cli
from tests.markdown import DOCS, section
from tests.servers import ROOT

MANIFEST = ROOT / "deploy" / "k8s" / "backup-cronjob.yaml"
K8S_VERSION = "1.30.0"
Resource = dict[str, Any]

JOBS = {
    # name: schedule, args, PVC
    "redis-backup": ("0 2 * * *", ["backup", "redis", "--keep-days", "7"], "redis-backup-pvc"),
    "db-backup": ("30 2 * * *", ["backup", "sqlite", "--keep-days", "14"], "db-backup-pvc"),
}


@pytest.fixture(scope="module")
def resources() -> dict[tuple[str, str], Resource]:
    docs = [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}


def test_exactly_the_two_cronjobs_and_their_volumes(resources: dict[Any, Resource]) -> None:
    assert set(resources) == {
        ("CronJob", "redis-backup"),
        ("CronJob", "db-backup"),
        ("PersistentVolumeClaim", "redis-backup-pvc"),
        ("PersistentVolumeClaim", "db-backup-pvc"),
    }


def test_every_resource_validates_strictly(resources: dict[Any, Resource]) -> None:
    for resource in resources.values():
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)
    broken = resources[("CronJob", "db-backup")] | {"spec": {"schedule": 230}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.parametrize("name", JOBS)
def test_cronjob_contract(resources: dict[Any, Resource], name: str) -> None:
    schedule, args, claim = JOBS[name]
    cronjob = resources[("CronJob", name)]
    spec = cronjob["spec"]
    job = spec["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    (container,) = pod["containers"]
    assert spec["schedule"] == schedule
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] >= 1
    assert spec["failedJobsHistoryLimit"] >= 1
    assert 0 < job["backoffLimit"] <= 3
    labels = [
        cronjob["metadata"]["labels"],
        spec["jobTemplate"]["metadata"]["labels"],
        job["template"]["metadata"]["labels"],
    ]
    assert all(label["app"] == name for label in labels)
    assert pod["restartPolicy"] == "Never"
    assert pod["enableServiceLinks"] is False
    assert container["image"] == "lock-monitor:0.1.0"
    assert container["args"] == args
    for context in (pod["securityContext"], container["securityContext"]):
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] > 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes[mounts["/backup"]]["persistentVolumeClaim"]["claimName"] == claim
    env = {var["name"]: var for var in container["env"]}
    assert env["LOCK_MONITOR_DEST"]["value"] == "/backup"


@pytest.mark.parametrize("claim", ["redis-backup-pvc", "db-backup-pvc"])
def test_backup_volumes_are_10gi(resources: dict[Any, Resource], claim: str) -> None:
    spec = resources[("PersistentVolumeClaim", claim)]["spec"]
    assert spec["resources"]["requests"]["storage"] == "10Gi"
    assert spec["accessModes"] == ["ReadWriteOnce"]


def test_redis_backup_reaches_redis_as_its_own_user(resources: dict[Any, Resource]) -> None:
    pod = resources[("CronJob", "redis-backup")]["spec"]["jobTemplate"]["spec"]["template"]
    env = {var["name"]: var["value"] for var in pod["spec"]["containers"][0]["env"]}
    assert env["LOCK_MONITOR_REDIS_URL"] == "redis://redis:6379/0"
    assert env["LOCK_MONITOR_REDIS_USERNAME"] == "backup"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    directory, _, name = env["LOCK_MONITOR_REDIS_PASSWORD_FILE"].rpartition("/")
    secret = volumes[mounts[directory]]["secret"]
    assert secret["secretName"] == "redis-acl"
    assert secret["items"] == [{"key": "backup-password", "path": name}]


def test_db_backup_mounts_the_backend_database(resources: dict[Any, Resource]) -> None:
    pod = resources[("CronJob", "db-backup")]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {var["name"]: var["value"] for var in container["env"]}
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert env["LOCK_MONITOR_DB"].startswith(mounts["backend-data"] + "/")
    [term] = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    # The one pod that owns the ReadWriteOnce volume, named by the claim: not every app=backend
    # replica (another node means a Multi-Attach error until the deadline).
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    claim = volumes["backend-data"]["persistentVolumeClaim"]["claimName"]
    assert term["labelSelector"] == {"matchLabels": {"lock-monitor/volume-owner": claim}}


def test_the_volumes_note_wait_for_first_consumer_and_off_cluster_copies() -> None:
    """A zonal PVC created before its pod can land where the Job cannot run."""
    header = MANIFEST.read_text().split("\napiVersion:", 1)[0]
    assert "WaitForFirstConsumer" in header
    assert "Off-cluster copies" in header
    assert section(DOCS / "backups.md", "Off-cluster copies")


@pytest.mark.parametrize("name", JOBS)
def test_every_env_variable_is_an_option_of_the_command(
    resources: dict[Any, Resource], name: str
) -> None:
    """A misspelt LOCK_MONITOR_* variable would be ignored silently: each must be an option."""
    container = resources[("CronJob", name)]["spec"]["jobTemplate"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    group, command_name = container["args"][:2]
    command = cli.get_command(click.Context(cli), group).commands[command_name]  # type: ignore[union-attr]
    envvars = [param.envvar for param in command.params if param.envvar]
    known = {env for envvar in envvars for env in ([envvar] if isinstance(envvar, str) else envvar)}
    used = {var["name"] for var in container["env"]} - {"SQLITE_TMPDIR"}
    assert used <= known
