"""The Redis pod of deploy/k8s: sized for a lock leak, Guaranteed, and Redis started as written.

The sizes come from measurements (docs/deployment.md, "Sizing"): these tests hold the manifest to
them, and start a real redis-server with the manifest's own arguments.
"""

from __future__ import annotations

import re

import yaml

from tests.deploy.conftest import ManifestRedis
from tests.deploy.helpers import Resource, alert_rules, container, find, quantity
from tests.servers import ROOT

# Measured (Redis 7.0, this version of lock-monitor): the daemon's peak RSS with 1,000,000 stuck
# locks, and the CPU time of one pass over them (the issue measured 2.8 CPU-s at 400,000).
MONITOR_PEAK_BYTES_1M_LOCKS = 368e6
MONITOR_PASS_CPU_SECONDS_1M_LOCKS = 7.0


def stale_threshold() -> float:
    """Seconds without a successful pass before LockMonitorStale fires, from the rule."""
    [rule] = [r for r in alert_rules() if r["alert"] == "LockMonitorStale"]
    return float(re.search(r"\)\s*>\s*(\d+)\s*$", rule["expr"]).group(1))  # type: ignore[union-attr]


def redis_settings(pod: Resource) -> dict[str, str]:
    redis_container = container(pod["spec"], "redis")
    args = redis_container["args"]
    return dict(zip(args[::2], args[1::2], strict=True))


def maxmemory(pod: Resource) -> float:
    value = redis_settings(pod)["--maxmemory"]
    assert value.endswith("mb")
    return float(value.removesuffix("mb")) * 2**20


def test_the_pod_is_guaranteed_qos(pod: Resource) -> None:
    """Every container's requests equal its limits, for CPU and memory: the last pod evicted."""
    for c in pod["spec"]["containers"]:
        resources = c["resources"]
        assert set(resources["limits"]) == {"cpu", "memory"}, c["name"]
        assert resources["requests"] == resources["limits"], c["name"]


def test_the_monitor_holds_a_million_stuck_locks(pod: Resource) -> None:
    limits = container(pod["spec"], "lock-monitor")["resources"]["limits"]
    assert quantity(limits["memory"]) >= MONITOR_PEAK_BYTES_1M_LOCKS


def test_the_monitors_cpu_limit_keeps_a_big_pass_far_from_the_stale_alert(pod: Resource) -> None:
    """A throttled pass takes CPU time / limit of wall time; pacing's wait comes on top of it.

    The pass over 1,000,000 locks must stay within an eighth of LockMonitorStale's threshold.
    """
    limits = container(pod["spec"], "lock-monitor")["resources"]["limits"]
    wall = MONITOR_PASS_CPU_SECONDS_1M_LOCKS / quantity(limits["cpu"])
    assert wall <= stale_threshold() / 8


def test_redis_memory_covers_a_fork(pod: Resource) -> None:
    """While an AOF rewrite or the backup's snapshot forks, copy-on-write can double the data."""
    limit = quantity(container(pod["spec"], "redis")["resources"]["limits"]["memory"])
    assert limit >= 2 * maxmemory(pod) * 1.25  # plus fragmentation, client and replica buffers


def test_the_data_volume_holds_aof_rewrite_and_the_pre_restore_copy(
    rendered: list[Resource], pod: Resource
) -> None:
    [claim] = find(rendered, "StatefulSet", "redis")["spec"]["volumeClaimTemplates"]
    size = quantity(claim["spec"]["resources"]["requests"]["storage"])
    assert size >= max(4 * maxmemory(pod), 2 * 2**30)


def test_the_volume_is_chowned_only_on_mismatch(pod: Resource) -> None:
    assert pod["spec"]["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"


def test_the_sidecars_readiness_does_not_gate_redis(pod: Resource) -> None:
    """Only the monitor broken (ACL, password, TLS) must not take redis-0 out of its Service."""
    probe = container(pod["spec"], "lock-monitor")["readinessProbe"]
    assert probe["httpGet"]["path"] == "/healthz"
    example = ROOT / "deploy" / "examples" / "cluster-deployment.yaml"
    [deployment] = [d for d in yaml.safe_load_all(example.read_text()) if d["kind"] == "Deployment"]
    [standalone] = deployment["spec"]["template"]["spec"]["containers"]
    assert standalone["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_redis_runs_with_aof_and_without_rdb_snapshots(manifest_redis: ManifestRedis) -> None:
    """The default `save` schedule would fork a BGSAVE about every minute beside the AOF."""
    config = manifest_redis.client().config_get("*")
    assert config["save"] == ""
    assert config["appendonly"] == "yes"
    assert config["maxmemory"] == str(256 * 2**20)
    assert config["maxmemory-policy"] == "allkeys-lru"
