"""The Kubernetes manifests: rendered by kustomize, schema-validated, and held to the guide.

The guide's names, ports and Redis settings are a contract with the operators and the backend;
these tests fail when a manifest drifts from it.
"""

from __future__ import annotations

import json
import tomllib

import kubernetes_validate
import pytest
import yaml

from lock_monitor.subscriber import missing_classes
from tests.deploy.helpers import (
    K8S,
    Resource,
    container,
    env_of,
    find,
    kustomize,
    secret_ref,
    unknown_monitor_env,
)
from tests.servers import ROOT

K8S_VERSION = "1.30.0"
EXAMPLE_SECRETS = ("secret.example.yaml", "redis-acl.example.yaml")  # not applied by -k
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}


@pytest.mark.parametrize("version", [K8S_VERSION, kubernetes_validate.latest_version()])
def test_every_resource_validates_strictly(rendered: list[Resource], version: str) -> None:
    """From the oldest Kubernetes supported here to the newest kubernetes-validate knows."""
    overlay = kustomize(ROOT / "deploy" / "overlays" / "scrape-annotations")
    examples = [yaml.safe_load((K8S / f).read_text()) for f in EXAMPLE_SECRETS]
    kinds = set()
    for resource in [*rendered, *yaml.safe_load_all(overlay), *examples]:
        kinds.add(resource["kind"])
        if (resource["apiVersion"], resource["kind"]) in CUSTOM_KINDS:
            continue  # custom resources have no schema in kubernetes-validate
        kubernetes_validate.validate(resource, version, strict=True)
    assert {"StatefulSet", "Service", "NetworkPolicy", "ConfigMap"} <= kinds
    assert not [r for r in rendered if r["kind"] == "Secret"], "never overwrite real passwords"
    assert {"ServiceMonitor", "PrometheusRule"} <= kinds


def test_validation_rejects_a_broken_resource(rendered: list[Resource]) -> None:
    broken = json.loads(json.dumps(find(rendered, "Service", "redis")))
    broken["spec"]["ports"][0]["prot"] = 6379
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_redis_statefulset_settings(rendered: list[Resource], pod: Resource) -> None:
    sts = find(rendered, "StatefulSet", "redis")
    assert sts["spec"]["serviceName"] == "redis-headless"
    assert pod["metadata"]["labels"]["app"] == "redis"
    default_container = pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"]
    assert default_container == "redis", "the guide's kubectl exec redis-0 -- redis-cli"
    assert sts["spec"]["selector"]["matchLabels"] == {"app": "redis"}
    redis = container(pod["spec"], "redis")
    assert redis["image"].startswith("redis:7")
    args = redis["command"] + redis["args"]
    settings = dict(zip(args[1::2], args[2::2], strict=False))
    assert settings["--maxmemory"] == "256mb"
    assert settings["--maxmemory-policy"] == "allkeys-lru"
    assert settings["--appendonly"] == "yes"
    assert not missing_classes(settings["--notify-keyspace-events"])  # lock-monitor's events
    assert "h" in settings["--notify-keyspace-events"]  # hash (Redisson) locks too
    # the users, the default (backend's) one included, come from the ACL file in redis-acl
    assert "--requirepass" not in settings
    assert settings["--aclfile"] == "/etc/redis-acl/users.acl"
    assert env_of(redis)["REDIS_PASSWORD"] == secret_ref()  # the readiness probe's redis-cli
    assert {p["containerPort"] for p in redis["ports"]} == {6379}
    assert redis["livenessProbe"]
    assert redis["readinessProbe"]
    assert redis["resources"]["requests"]
    assert redis["resources"]["limits"]
    claims = sts["spec"]["volumeClaimTemplates"]
    assert [c["metadata"]["name"] for c in claims] == ["data"]
    assert {"name": "data", "mountPath": "/data"} in redis["volumeMounts"]


def test_lock_monitor_sidecar(pod: Resource) -> None:
    c = container(pod["spec"], "lock-monitor")
    image, _, tag = c["image"].rpartition(":")
    assert image.endswith("lock-monitor")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert tag == version, "the image tag in kustomization.yaml follows the project version"
    env = env_of(c)
    assert env["LOCK_MONITOR_REDIS_URL"].startswith("redis://localhost:6379")
    assert env["LOCK_MONITOR_REDIS_USERNAME"] == "lockmon"
    assert env["LOCK_MONITOR_REDIS_PASSWORD_FILE"] == "/etc/lock-monitor/password"
    assert env["LOCK_MONITOR_LISTEN_ADDRESS"] == "0.0.0.0"
    assert not unknown_monitor_env(env)
    assert c["ports"] == [{"name": "lock-monitor", "containerPort": 9150, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "lock-monitor"}
    # the pod's readiness is shared with Redis: a failing pass must not take Redis out
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "lock-monitor"}
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"]
    assert c["resources"]["limits"]


def test_no_service_links_to_shadow_the_exporter_options(pod: Resource) -> None:
    """Service lock-monitor would inject LOCK_MONITOR_PORT=tcp://..., read as the --port option."""
    assert pod["spec"]["enableServiceLinks"] is False


def test_redis_exporter_sidecar(pod: Resource) -> None:
    c = container(pod["spec"], "redis-exporter")
    assert c["image"].startswith("oliver006/redis_exporter:")
    assert env_of(c)["REDIS_USER"] == "exporter"
    assert env_of(c)["REDIS_PASSWORD_FILE"] == "/etc/redis-exporter/passwords.json"
    assert "REDIS_PASSWORD" not in env_of(c), "sent to any /scrape?target= a caller names"
    assert env_of(c)["REDIS_ADDR"] == "redis://localhost:6379"
    assert [p["containerPort"] for p in c["ports"]] == [9121]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["resources"]["limits"]


@pytest.mark.parametrize(
    ("name", "port", "target", "scraped"),
    [
        ("redis", 6379, "redis", False),
        ("redis-headless", 6379, "redis", False),
        ("lock-monitor", 9150, "lock-monitor", True),
        ("redis-exporter", 9121, "redis-exporter", True),
    ],
)
def test_services(
    rendered: list[Resource], pod: Resource, name: str, port: int, target: str, scraped: bool
) -> None:
    svc = find(rendered, "Service", name)
    selector = svc["spec"]["selector"]
    assert selector.items() <= pod["metadata"]["labels"].items(), "selector must match the pod"
    [svc_port] = svc["spec"]["ports"]
    assert (svc_port["port"], svc_port["targetPort"]) == (port, target)
    named_ports = {p["name"] for c in pod["spec"]["containers"] for p in c["ports"]}
    assert target in named_ports
    assert not svc["metadata"].get("annotations"), "scraped by the ServiceMonitors only"
    if scraped:
        assert svc["metadata"]["labels"]["app"] == name
        assert svc["spec"]["publishNotReadyAddresses"] is True, "scrape redis_up 0 while down"
        assert find(rendered, "ServiceMonitor", name)
    if name == "redis-headless":
        assert svc["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize("name", ["lock-monitor", "redis-exporter"])
def test_service_monitors(rendered: list[Resource], name: str) -> None:
    sm = find(rendered, "ServiceMonitor", name)
    svc = find(rendered, "Service", name)
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    others = [s for s in rendered if s["kind"] == "Service" and s is not svc]
    assert not any(
        sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        for s in others
    ), "the ServiceMonitor must select only its own Service"
    [endpoint] = sm["spec"]["endpoints"]
    assert endpoint["port"] == svc["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"


def test_scrape_annotations_only_in_their_overlay_without_the_operators_resources(
    rendered: list[Resource],
) -> None:
    """Annotations beside ServiceMonitors get every target scraped twice, under two jobs."""
    overlay = [
        doc
        for doc in yaml.safe_load_all(
            kustomize(ROOT / "deploy" / "overlays" / "scrape-annotations")
        )
        if doc
    ]
    assert not [r for r in overlay if r["apiVersion"].startswith("monitoring.coreos.com")]
    annotated = {
        r["metadata"]["name"]: r["metadata"]["annotations"]
        for r in overlay
        if "prometheus.io/scrape" in r["metadata"].get("annotations", {})
    }
    assert set(annotated) == {"lock-monitor", "redis-exporter"}
    for name, found in annotated.items():
        [port] = find(overlay, "Service", name)["spec"]["ports"]
        assert found == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(port["port"]),
            "prometheus.io/path": "/metrics",
        }
    assert len(overlay) == len(rendered) - 3  # everything else, unchanged
    for resource in rendered:
        assert not any(
            key.startswith("prometheus.io/") for key in resource["metadata"].get("annotations", {})
        ), resource["metadata"]["name"]


def component_patch(target: Resource) -> list[Resource]:
    """The JSON patch components/prometheus applies to `target`."""
    component = yaml.safe_load(
        (K8S / "components" / "prometheus" / "kustomization.yaml").read_text()
    )
    assert component["kind"] == "Component"
    [patch] = [p for p in component["patches"] if p["target"] == target]
    return list(yaml.safe_load(patch["patch"]))


def monitoring_namespace() -> str:
    [*_, operation] = component_patch({"kind": "NetworkPolicy", "name": "redis"})
    return str(operation["value"]["matchLabels"]["kubernetes.io/metadata.name"])


def selector_label() -> tuple[str, str]:
    """The label components/prometheus puts on every Prometheus Operator resource."""
    [operation] = component_patch({"group": "monitoring.coreos.com"})
    assert operation["op"] == "add"
    assert operation["path"].startswith("/metadata/labels/")
    return operation["path"].removeprefix("/metadata/labels/"), operation["value"]


def test_one_component_sets_the_prometheus_selector_label(rendered: list[Resource]) -> None:
    """A wrong label means no scraping and no rules: it is set in exactly one place."""
    key, value = selector_label()
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "components/prometheus" in kustomization["components"]
    operator_resources = [r for r in rendered if r["apiVersion"].startswith("monitoring.coreos")]
    assert {r["kind"] for r in operator_resources} == {"ServiceMonitor", "PrometheusRule"}
    for resource in operator_resources:
        assert resource["metadata"]["labels"][key] == value
    for source in ("servicemonitors.yaml", "prometheus-rule.yaml"):
        for document in yaml.safe_load_all((K8S / source).read_text()):
            assert key not in document["metadata"]["labels"], f"{source} sets {key} itself"


def test_network_policy(rendered: list[Resource], pod: Resource) -> None:
    policy = find(rendered, "NetworkPolicy", "redis")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert policy["policyTypes"] == ["Ingress"]
    allowed: dict[int, list[Resource]] = {}
    for rule in policy["ingress"]:
        for port in rule["ports"]:
            allowed.setdefault(port["port"], []).extend(rule["from"])
    assert set(allowed) == {6379, 9150, 9121}
    assert allowed[6379] == [
        {"podSelector": {"matchLabels": {"app": "backend"}}},
        {"podSelector": {"matchLabels": {"app": "redis-backup"}}},  # the Redis backup CronJob
    ]
    # Prometheus pods of the monitoring namespace only, which components/prometheus sets
    namespace = {"kubernetes.io/metadata.name": monitoring_namespace()}
    prometheus = {
        "namespaceSelector": {"matchLabels": namespace},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }
    assert allowed[9150] == [prometheus]
    assert allowed[9121] == [prometheus]
    source = yaml.safe_load((K8S / "networkpolicy.yaml").read_text())
    assert "namespaceSelector" not in json.dumps(source), "set in one place: the component"


def test_example_secret_is_marked_and_a_placeholder() -> None:
    example = ROOT / "deploy" / "k8s" / "secret.example.yaml"
    secret = yaml.safe_load(example.read_text())
    kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
    assert (secret["kind"], secret["metadata"]["name"]) == ("Secret", "redis-secret")
    assert set(secret["stringData"]) == {"password"}
    assert "CHANGE-ME" in secret["stringData"]["password"]
    assert "EXAMPLE ONLY" in example.read_text()


def test_prometheus_rule_and_dashboard_config_map(rendered: list[Resource]) -> None:
    rule = find(rendered, "PrometheusRule", "lock-monitor-alerts")
    source = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == source["groups"]
    for name in ("appointment-performance", "locks"):
        cm = find(rendered, "ConfigMap", f"grafana-dashboard-{name}")
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        dashboard = ROOT / "deploy" / "grafana" / "dashboards" / f"{name}.json"
        assert json.loads(cm["data"][f"{name}.json"]) == json.loads(dashboard.read_text())


def test_kustomization_leaves_room_for_backups() -> None:
    text = (ROOT / "deploy" / "k8s" / "kustomization.yaml").read_text()
    assert "backup-cronjob.yaml" in text
