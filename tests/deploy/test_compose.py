"""The local stack: the guide's container name and ports, and files that the mounts need."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.deploy.helpers import (
    ALERTS,
    DASHBOARD,
    DEPLOY,
    load_yaml,
    promtool,
    rule_generator,
    unknown_monitor_env,
)
from tests.servers import ROOT

PORTS = {
    "redis": 6379,
    "redis-exporter": 9121,
    "lock-monitor": 9150,
    "prometheus": 9090,
    "grafana": 3000,
}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return load_yaml(ROOT / "docker-compose.yml")["services"]


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of the bind mounts (named volumes left out)."""
    result = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            result[target] = ROOT / source
    return result


def test_services_and_published_ports(services: dict[str, Any]) -> None:
    assert set(services) == set(PORTS)
    assert services["redis"]["container_name"] == "hack-redis"
    for name, port in PORTS.items():
        assert services[name]["ports"] == [f"127.0.0.1:{port}:{port}"], name


def test_redis_has_the_guides_settings(services: dict[str, Any]) -> None:
    command = services["redis"]["command"]
    settings = dict(zip(command[1::2], command[2::2], strict=False))
    assert settings == {
        "--maxmemory": "256mb",
        "--maxmemory-policy": "allkeys-lru",
        "--notify-keyspace-events": "Kg$$xeh",  # Compose reads $$ as one $
        "--appendonly": "yes",
    }


def test_lock_monitor_is_built_here_and_locked_down(services: dict[str, Any]) -> None:
    monitor = services["lock-monitor"]
    assert monitor["build"] == "."
    assert (ROOT / "Dockerfile").exists()
    assert monitor["read_only"] is True
    assert monitor["environment"]["LOCK_MONITOR_REDIS_URL"] == "redis://redis:6379/0"
    assert not unknown_monitor_env(monitor["environment"])


def test_prometheus_loads_the_rules_and_its_config_is_valid(services: dict[str, Any]) -> None:
    files = mounts(services["prometheus"])
    config = files["/etc/prometheus/prometheus.yml"]
    assert config == DEPLOY / "prometheus" / "prometheus.yml"
    assert files["/etc/prometheus/alerts.yml"] == ALERTS
    assert load_yaml(config)["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in load_yaml(config)["scrape_configs"]}
    generator = rule_generator()
    labels = {"namespace": generator.NAMESPACE}  # the rules select this stack's series by it
    for name, target in [
        ("lock_monitor", "lock-monitor:9150"),
        ("redis_exporter", "redis-exporter:9121"),
    ]:
        job = generator.JOBS[name]
        assert jobs[job]["static_configs"] == [{"targets": [target], "labels": labels}]
    assert "SUCCESS" in promtool("check", "config", str(config))


def test_grafana_credentials_and_provisioned_dashboard(services: dict[str, Any]) -> None:
    grafana = services["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_USER"] == "admin"
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "admin123"
    files = mounts(grafana)
    provisioning = files["/etc/grafana/provisioning"]
    assert (provisioning / "dashboards" / "dashboards.yml").is_file()
    assert (provisioning / "datasources" / "prometheus.yml").is_file()
    assert files["/var/lib/grafana/dashboards"] / DASHBOARD.name == DASHBOARD
    assert DASHBOARD.is_file()


def test_every_bind_mount_exists(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for target, source in mounts(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
