"""--web-config-file over real connections: HTTPS with openssl-made certificates, mutual TLS,
basic auth with /healthz and /readyz open for probes, and a certificate rotated on disk."""

from __future__ import annotations

import base64
import hashlib
import shutil
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import (
    Certificates,
    MonitorProcess,
    RedisServer,
    make_certificates,
    mixed_locks,
    wait_for,
    web_config_file,
)

pytestmark = pytest.mark.integration

PASSWORD = "scrape-pw"
AUTH = "Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def client_context(certs: Certificates, with_certificate: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.ca))
    if with_certificate:
        context.load_cert_chain(certs.client_cert, certs.client_key)
    return context


@pytest.fixture
def secured(
    redis_srv: RedisServer, certs: Certificates, tmp_path: Path
) -> Iterator[MonitorProcess]:
    mixed_locks(redis_srv.client(), stuck=2, fresh=1)
    config = web_config_file(tmp_path, certs, PASSWORD)
    monitor = MonitorProcess(
        "--redis-url", redis_srv.url, "--interval", "0.2", "--web-config-file", str(config),
        tls=client_context(certs),
    ).start()  # fmt: skip
    try:
        yield monitor
    finally:
        monitor.stop()


def fetch(monitor: MonitorProcess, path: str, authorization: str | None = None) -> int:
    request = urllib.request.Request(monitor.base + path)
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=5, context=monitor.tls) as response:
            status, headers = int(response.status), response.headers
    except urllib.error.HTTPError as error:
        status, headers = int(error.code), error.headers
    assert headers["X-Frame-Options"] == "DENY"
    if status == 401:
        assert headers["WWW-Authenticate"].startswith('Basic realm="lock-monitor"')
    return status


def test_https_with_basic_auth_and_open_probes(secured: MonitorProcess) -> None:
    for path in ("/metrics", "/", "/locks", "/nope"):
        assert fetch(secured, path) == 401
        assert (
            fetch(secured, path, "Basic " + base64.b64encode(b"prometheus:wrong").decode()) == 401
        )
    assert fetch(secured, "/metrics", AUTH) == 200
    assert fetch(secured, "/locks", AUTH) == 200
    assert fetch(secured, "/healthz") == 200
    wait_for(lambda: fetch(secured, "/readyz") == 200, what="/readyz without credentials")
    secured.authorization = AUTH
    wait_for(lambda: secured.value("stuck_locks_count") == 2, what="the locks over HTTPS")
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP: no answer
        urllib.request.urlopen(f"http://127.0.0.1:{secured.port}/healthz", timeout=5)


def peer_fingerprint(port: int) -> str:
    unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        unverified.wrap_socket(raw) as tls,
    ):
        certificate = tls.getpeercert(binary_form=True)
    assert certificate is not None
    return hashlib.sha256(certificate).hexdigest()


def test_a_rotated_certificate_is_served_without_a_restart(
    redis_srv: RedisServer, certs: Certificates, tmp_path: Path
) -> None:
    config = web_config_file(tmp_path, certs, PASSWORD)
    monitor = MonitorProcess(
        "--redis-url", redis_srv.url, "--web-config-file", str(config), tls=client_context(certs)
    ).start()  # fmt: skip
    try:
        before = peer_fingerprint(monitor.port)
        rotated = make_certificates(tmp_path / "rotated")
        # A key written before its certificate: the old pair stays in use meanwhile.
        shutil.copy(rotated.server_key, tmp_path / "server.key")
        assert peer_fingerprint(monitor.port) == before
        shutil.copy(rotated.server_cert, tmp_path / "server.crt")
        assert peer_fingerprint(monitor.port) != before
        monitor.tls = client_context(rotated)
        assert fetch(monitor, "/healthz") == 200  # verified against the new CA
    finally:
        monitor.stop()
    warnings = [e for e in monitor.events() if e["event"] == "web_tls_reload_failed"]
    assert len(warnings) == 1  # the half-rotated pair, said once


@pytest.mark.parametrize("sans", [[], ["prometheus.monitoring.svc"]], ids=["any", "by-san"])
def test_mutual_tls_requires_a_client_certificate_the_ca_signed(
    redis_srv: RedisServer, certs: Certificates, tmp_path: Path, sans: list[str]
) -> None:
    """With client_allowed_sans, even a certificate the CA signed is refused if it names none."""
    config = web_config_file(
        tmp_path,
        certs,
        PASSWORD,
        client_auth_type="RequireAndVerifyClientCert",
        client_ca_file=str(certs.ca),
        client_allowed_sans=sans,
    )
    monitor = MonitorProcess(
        "--redis-url", redis_srv.url, "--web-config-file", str(config),
        tls=client_context(certs, with_certificate=True),
    ).launch()  # fmt: skip
    try:
        if not sans:
            assert fetch(monitor, "/metrics", AUTH) == 200
            monitor.tls = client_context(certs)  # no client certificate
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            fetch(monitor, "/healthz")
    finally:
        monitor.stop()
