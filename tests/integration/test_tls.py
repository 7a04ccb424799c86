"""TLS with certificates made at test time: verification, mutual TLS, a wrong CA, insecure mode."""

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import (
    Certificates,
    RedisServer,
    cli_error,
    free_port,
    make_certificates,
    require_tls_build,
    run_monitor,
    running_monitor,
    set_locks,
    tls_arguments,
    wait_for,
)

LOCKS = 5


@dataclass
class TlsServer:
    server: RedisServer
    tls_port: int

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.tls_port}/0"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def start_tls_server(
    tmp_path_factory: pytest.TempPathFactory, certs: Certificates, mutual: bool
) -> TlsServer:
    require_tls_build()
    tls_port = free_port()
    workdir = tmp_path_factory.mktemp("tls-redis")
    # A backup's SYNC starts at once, not after Redis' 5 s wait for more replicas.
    nodelay = ("--repl-diskless-sync-delay", "0")
    server = RedisServer(workdir, None, *tls_arguments(certs, tls_port, mutual), *nodelay).start()
    set_locks(server.client(), [f"lock:appointment:{i}" for i in range(LOCKS)], age=1)
    return TlsServer(server, tls_port)


def serving(tls: TlsServer) -> Iterator[TlsServer]:
    try:
        yield tls
    finally:
        tls.server.stop()


@pytest.fixture(scope="module")
def mutual(tmp_path_factory: pytest.TempPathFactory, certs: Certificates) -> Iterator[TlsServer]:
    """Asks every client for a certificate signed by the CA (tls-auth-clients yes)."""
    yield from serving(start_tls_server(tmp_path_factory, certs, mutual=True))


@pytest.fixture(scope="module")
def one_way(tmp_path_factory: pytest.TempPathFactory, certs: Certificates) -> Iterator[TlsServer]:
    yield from serving(start_tls_server(tmp_path_factory, certs, mutual=False))


def locks(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_monitor("locks", "--json", "--redis-url", url, *args)


def client_pair(certs: Certificates) -> tuple[str, ...]:
    return ("--redis-cert-file", str(certs.client_cert), "--redis-key-file", str(certs.client_key))


def test_mutual_tls_reads_the_locks(mutual: TlsServer, certs: Certificates) -> None:
    result = locks(mutual.url, "--redis-ca-file", str(certs.ca), *client_pair(certs))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pass"]["active"] == LOCKS


def test_without_a_client_certificate_the_error_says_so(
    mutual: TlsServer, certs: Certificates
) -> None:
    line = cli_error(locks(mutual.url, "--redis-ca-file", str(certs.ca)))
    assert "TLS: the server ended the session" in line
    assert "client certificate" in line


def test_a_wrong_ca_fails_with_a_clear_line(mutual: TlsServer, certs: Certificates) -> None:
    line = cli_error(locks(mutual.url, "--redis-ca-file", str(certs.other_ca), *client_pair(certs)))
    assert "TLS: the server's certificate does not verify" in line
    assert "--redis-ca-file" in line


def test_verification_is_on_by_default(one_way: TlsServer) -> None:
    line = cli_error(locks(one_way.url))  # the system CAs do not know the test CA
    assert "does not verify" in line


def test_daemon_reports_a_certificate_that_does_not_verify(
    one_way: TlsServer, certs: Certificates
) -> None:
    with running_monitor(
        "--redis-url", one_way.url, "--redis-ca-file", str(certs.other_ca)
    ) as monitor:
        status = wait_for(
            lambda: json.loads(monitor.get("/locks")[1])["last_error"], what="an error"
        )
        assert monitor.value("lock_monitor_redis_up") == 0
        assert monitor.value("active_locks_count") is None
    assert "TLS: the server's certificate does not verify" in status
    errors = [event for event in monitor.events() if event["event"] == "redis_unavailable"]
    assert errors
    assert "does not verify" in str(errors[0]["error"])


def test_insecure_mode_reads_and_warns(one_way: TlsServer) -> None:
    with running_monitor("--redis-url", one_way.url, "--redis-tls-insecure") as monitor:
        wait_for(lambda: monitor.value("active_locks_count") == LOCKS, what="the locks")
    warnings = [
        event for event in monitor.events() if event["event"] == "tls_verification_disabled"
    ]
    assert len(warnings) == 1
    assert warnings[0]["level"] == "warning"


def test_locks_and_backup_warn_when_verification_is_off(one_way: TlsServer, tmp_path: Path) -> None:
    read = locks(one_way.url, "--redis-tls-insecure")
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout)["pass"]["active"] == LOCKS
    backup = run_monitor(
        "backup",
        "redis",
        "--redis-url",
        one_way.url,
        "--redis-tls-insecure",
        "--dest",
        str(tmp_path),
    )
    assert backup.returncode == 0, backup.stderr
    for result in (read, backup):
        first = json.loads(result.stderr.splitlines()[0])
        assert (first["event"], first["level"]) == ("tls_verification_disabled", "warning")
        assert first["target"] == one_way.url
    assert json.loads(backup.stderr.splitlines()[-1])["event"] == "redis_backup_written"
