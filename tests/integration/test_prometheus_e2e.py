"""A real Prometheus scrapes the real exporter with the real alert rules loaded.

This is where the rules meet the exporter's actual metric names: StuckLocksDetected must see
`stuck_locks_count` as Prometheus stores it, go pending above five stuck locks, and clear when
they are released; LockMonitorStale must see a monitor that never completed a pass.
"""

from __future__ import annotations

import json
import re
import signal
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
import yaml

from tests.deploy.helpers import ALERTS, alert_rules, rule_generator
from tests.servers import (
    NOTIFY,
    Certificates,
    MonitorProcess,
    RedisServer,
    free_port,
    make_certificates,
    monitor_env,
    redis_server,
    require_binary,
    wait_for,
    web_config_file,
)

pytestmark = pytest.mark.timeout(90)

GENERATOR = rule_generator()
STUCK = 'stuck_locks_count{job="lock-monitor"}'
# Prometheus scrapes and evaluates this often here (the shipped config: 30 s), and the monitor
# passes as often: each step of a test waits for a few of these, not for seconds.
EVERY = 0.2
EVERY_MS = f"{EVERY * 1000:g}ms"
ACTIVE = 'active_locks_count{job="lock-monitor"}'


class PrometheusServer:
    """/usr/bin/prometheus on a loopback port, scraping and evaluating every EVERY seconds."""

    def __init__(self, workdir: Path, target: str, **scrape: Any) -> None:
        """`scrape`: more of the scrape config (scheme, tls_config, basic_auth...)."""
        self.binary = require_binary("prometheus")
        self.target = target
        self.workdir = workdir
        self.port = free_port()
        self.log = workdir / "prometheus.log"
        config = {
            "global": {"scrape_interval": EVERY_MS, "evaluation_interval": EVERY_MS},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {
                    "job_name": GENERATOR.JOBS["lock_monitor"],
                    # the rules select this deployment's series by job and namespace
                    "static_configs": [
                        {"targets": [target], "labels": {"namespace": GENERATOR.NAMESPACE}}
                    ],
                    **scrape,
                }
            ],
        }
        self.config = workdir / "prometheus.yml"
        self.process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(yaml.safe_dump(config))

    @property
    def target_port(self) -> int:
        """Where the exporter it scrapes must serve."""
        return int(self.target.rpartition(":")[2])

    def start(self) -> PrometheusServer:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        wait_for(self._ready, timeout=30, what="prometheus /-/ready")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"prometheus exited: {self.log.read_text()}")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
            return bool(r.status == 200)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def value(self, query: str) -> float | None:
        """The instant value of a one-series query, None when it has no result."""
        result = self.api("query", query=query)["result"]
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def alerts(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name]

    def alert_states(self, name: str) -> list[str]:
        return [alert["state"] for alert in self.alerts(name)]

    def last_evaluation(self, group: str) -> float:
        """Unix time of the rule group's last evaluation."""
        [found] = [g for g in self.api("rules")["groups"] if g["name"] == group]
        stamp = re.sub(r"(\.\d{6})\d*", r"\1", found["lastEvaluation"]).replace("Z", "+00:00")
        return datetime.fromisoformat(stamp).timestamp()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """One Prometheus for the tests over plain HTTP, scraping one address where each test runs
    a monitor of its own: Prometheus scrapes a new target only after its discovery tick (5 s),
    but a new process at the same address at its next scrape. A test's monitor stops before
    the next one starts, so Prometheus marks its series stale: no query sees them after."""
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), f"127.0.0.1:{free_port()}")
    try:
        yield server.start()
    finally:
        server.stop()


@dataclass(frozen=True)
class HttpsScrape:
    """A Prometheus scraping over HTTPS as the scrape user, and what the exporter needs for it."""

    prometheus: PrometheusServer
    certs: Certificates
    web_config: Path


@pytest.fixture(scope="module", autouse=True)
def https_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsScrape]:
    """Started with the module, beside the plain one: by the time its test starts the exporter
    at its target, its discovery tick (5 s) has passed."""
    workdir = tmp_path_factory.mktemp("https")
    certs = make_certificates(workdir / "certs")
    web_config = web_config_file(workdir, certs, "scrape-pw")
    server = PrometheusServer(
        workdir / "prometheus",
        f"127.0.0.1:{free_port()}",
        scheme="https",
        tls_config={"ca_file": str(certs.ca)},
        basic_auth={"username": "prometheus", "password": "scrape-pw"},
    )
    try:
        yield HttpsScrape(server.start(), certs, web_config)
    finally:
        server.stop()


@contextmanager
def scraped_monitor(
    prometheus: PrometheusServer,
    tmp_path: Path,
    *redis_args: str,
    env: dict[str, str] | None = None,
) -> Iterator[tuple[RedisServer, str]]:
    """Redis and a lock-monitor watching it at Prometheus' target, once Prometheus has scraped
    this very process; the target too."""
    target = prometheus.target
    with redis_server(tmp_path / "redis", *redis_args) as server:
        args = ("--redis-url", server.url, "--interval", str(EVERY), "--stuck-threshold", "30")
        monitor = MonitorProcess(*args, env=env, port=prometheus.target_port).start()
        try:
            started = monitor.value("process_start_time_seconds")
            query = f'process_start_time_seconds{{instance="{target}"}}'
            wait_for(lambda: prometheus.value(query) == started, what="a scrape of this monitor")
            yield server, target
        finally:
            monitor.stop()


@pytest.fixture
def stack(
    prometheus: PrometheusServer, tmp_path: Path
) -> Iterator[tuple[redis.Redis, PrometheusServer]]:
    with scraped_monitor(prometheus, tmp_path) as (server, _):
        yield server.client(), prometheus


def add_locks(client: redis.Redis, ids: range, age_seconds: float) -> None:
    """Locks as the backend takes them: SET key <epoch-ms> PX ... NX, `age_seconds` old."""
    value = int((time.time() - age_seconds) * 1000)
    for i in ids:
        assert client.set(f"lock:appointment:{i}", value, px=300_000, nx=True)


def evaluated_after(
    prometheus: PrometheusServer, moment: float, group: str = "lock-monitor"
) -> None:
    """Wait until the `group` rules were evaluated after `moment` (no fixed sleep)."""
    wait_for(
        lambda: prometheus.last_evaluation(group) > moment + 2 * EVERY,
        timeout=15,
        what="a rule evaluation",
    )


def test_stuck_locks_alert_goes_pending_and_clears(
    stack: tuple[redis.Redis, PrometheusServer],
) -> None:
    client, prometheus = stack
    add_locks(client, range(100, 102), age_seconds=0)  # fresh: active, not stuck
    add_locks(client, range(5), age_seconds=60)
    wait_for(lambda: prometheus.value(STUCK) == 5, timeout=20, what="stuck_locks_count 5")
    assert prometheus.value(ACTIVE) == 7

    # Exactly five stuck is not "more than five": after an evaluation that saw 5, nothing.
    evaluated_after(prometheus, time.time())
    assert prometheus.value(STUCK) == 5
    assert prometheus.alert_states("StuckLocksDetected") == []

    add_locks(client, range(5, 7), age_seconds=60)
    wait_for(lambda: prometheus.value(STUCK) == 7, timeout=20, what="stuck_locks_count 7")
    assert prometheus.value(ACTIVE) == 9
    states = wait_for(
        lambda: prometheus.alert_states("StuckLocksDetected"), timeout=20, what="the alert"
    )
    assert states == ["pending"], "its `for` is 5m: pending, not firing yet"
    [alert] = prometheus.alerts("StuckLocksDetected")
    assert alert["labels"]["severity"] == "warning"
    assert alert["labels"]["job"] == "lock-monitor"

    client.delete(*[f"lock:appointment:{i}" for i in range(7)])
    wait_for(lambda: prometheus.value(STUCK) == 0, timeout=20, what="stuck_locks_count 0")
    assert prometheus.value(ACTIVE) == 2
    wait_for(
        lambda: prometheus.alert_states("StuckLocksDetected") == [],
        timeout=20,
        what="StuckLocksDetected to clear",
    )
    assert prometheus.alert_states("LockMonitorDown") == []
    assert prometheus.alert_states("LockMonitorStale") == []


def test_stale_rule_sees_a_monitor_that_never_succeeded(
    prometheus: PrometheusServer, tmp_path: Path
) -> None:
    """Wrong password from the start: no timestamp, yet LockMonitorStale's expression fires.

    The rule has no `for`, so evaluating its exact expression at a later `time` (the samples
    stay within Prometheus' 5-minute lookback) shows what the rule will see without waiting.
    """
    [rule] = [rule for rule in alert_rules() if rule["alert"] == "LockMonitorStale"]
    env = monitor_env(REDIS_PASSWORD="wrong")
    with scraped_monitor(prometheus, tmp_path, "--requirepass", "right", env=env) as (_, target):
        up = f'lock_monitor_redis_up{{instance="{target}"}}'
        wait_for(lambda: prometheus.value(up) == 0, timeout=20, what="lock_monitor_redis_up 0")
        assert prometheus.value('up{job="lock-monitor"}') == 1
        assert prometheus.value("lock_monitor_last_check_timestamp") is None
        now = time.time()

        def stale_at(offset: float) -> list[dict[str, Any]]:
            result: list[dict[str, Any]] = prometheus.api(
                "query", query=rule["expr"], time=str(now + offset)
            )["result"]
            return result

        assert stale_at(60) == [], "started seconds ago: not yet 2 minutes without a pass"
        [series] = stale_at(150)
        labels = {"job": "lock-monitor", "namespace": GENERATOR.NAMESPACE, "instance": target}
        assert series["metric"] == labels
        assert 150 <= float(series["value"][1]) < 150 + 30  # seconds since the process started


def test_lock_event_alerts_end_to_end(prometheus: PrometheusServer, tmp_path: Path) -> None:
    """Evicted and expiring locks, then events lost: each alert sees the exporter's series."""
    memory = ("--maxmemory", "3mb", "--maxmemory-policy", "allkeys-lru")
    with scraped_monitor(prometheus, tmp_path, *NOTIFY, *memory) as (server, _):
        client = server.client()
        events_up = 'lock_monitor_events_up{job="lock-monitor"}'
        wait_for(lambda: prometheus.value(events_up) == 1, timeout=20, what="events up")
        evaluated_after(prometheus, time.time(), "lock-events")
        assert prometheus.alert_states("LockEvicted") == []

        # Crashed holders: 60 locks expire, none released (over 3 a minute in 15m, 100 %).
        for i in range(60):
            client.set(f"lock:appointment:crashed-{i}", int(time.time() * 1000), px=100, nx=True)
        # Noise against the small maxmemory evicts held locks.
        held = [f"lock:appointment:held-{i}" for i in range(30)]
        for key in held:
            client.set(key, int(time.time() * 1000), px=300_000, nx=True)
        noise = 0
        while client.exists(*held) > 20:
            client.set(f"noise:{noise}", "x" * 1000)
            noise += 1

        firing = wait_for(
            lambda: [a for a in prometheus.alerts("LockEvicted") if a["state"] == "firing"],
            timeout=20,
            what="LockEvicted firing",
        )
        assert firing[0]["labels"]["severity"] == "critical"
        assert firing[0]["labels"]["outcome"] == "evicted"
        states = wait_for(
            lambda: prometheus.alert_states("LocksExpiringUnreleased"), timeout=20, what="pending"
        )
        assert states == ["pending"], "its `for` is 5m"

        server.stop()  # events down (and passes failing): LockMonitorEventsDown goes pending
        wait_for(
            lambda: prometheus.alert_states("LockMonitorEventsDown") == ["pending"],
            timeout=20,
            what="LockMonitorEventsDown pending",
        )


def test_prometheus_scrapes_over_tls_with_basic_auth(
    https_prometheus: HttpsScrape, tmp_path: Path
) -> None:
    """As an operator sets it up: the exporter with --web-config-file, Prometheus with
    scheme https, the CA to verify it, and the scrape user's password."""
    prometheus, certs = https_prometheus.prometheus, https_prometheus.certs
    with redis_server(tmp_path / "redis") as server:
        add_locks(server.client(), range(3), age_seconds=60)
        args = ("--redis-url", server.url, "--interval", str(EVERY))
        args += ("--web-config-file", str(https_prometheus.web_config))
        tls = ssl.create_default_context(cafile=certs.ca)
        monitor = MonitorProcess(*args, tls=tls, port=prometheus.target_port).start()
        try:
            wait_for(lambda: prometheus.value(STUCK) == 3, timeout=20, what="stuck locks over TLS")
            assert prometheus.value('up{job="lock-monitor"}') == 1
        finally:
            monitor.stop()
