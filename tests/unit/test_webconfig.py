"""The web configuration file (exporter-toolkit's format): what is accepted, what is refused in
one line, and basic auth's checks. TLS over real connections: tests/integration/test_web_tls.py."""

from __future__ import annotations

import base64
import ssl
import time
from pathlib import Path

import bcrypt
import pytest
import yaml

from lock_monitor.webconfig import BasicAuth, WebConfigError, load_web_config
from tests.servers import Certificates, make_certificates
from tests.unit.conftest import RunCli

HASH = bcrypt.hashpw(b"scrape-pw", bcrypt.gensalt(4)).decode()  # cost 4: quick in tests


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "web-config.yml"
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    return path


def tls(certs: Certificates, **extra: object) -> dict[str, object]:
    return {"cert_file": str(certs.server_cert), "key_file": str(certs.server_key), **extra}


def test_a_full_file_as_node_exporter_users_write_it(tmp_path: Path, certs: Certificates) -> None:
    (tmp_path / "tls").mkdir()
    for source in (certs.server_cert, certs.server_key, certs.ca):
        (tmp_path / "tls" / source.name).write_bytes(source.read_bytes())
    config = load_web_config(
        write(
            tmp_path,
            {
                "tls_server_config": {
                    "cert_file": "tls/server.crt",  # relative to the file, as with the toolkit
                    "key_file": "tls/server.key",
                    "client_auth_type": "RequireAndVerifyClientCert",
                    "client_ca_file": "tls/ca.crt",
                    "client_allowed_sans": ["client"],
                    "min_version": "TLS13",
                    "cipher_suites": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
                    "prefer_server_cipher_suites": False,
                    "curve_preferences": ["CurveP256"],
                },
                "http_server_config": {"http2": True, "headers": {"X-Frame-Options": "sameorigin"}},
                "basic_auth_users": {"prometheus": HASH},
            },
        )
    )
    assert config.tls is not None
    assert config.tls.cert_file == tmp_path / "tls/server.crt"
    assert config.tls.client_auth == ssl.CERT_REQUIRED
    assert config.tls.min_version == ssl.TLSVersion.TLSv1_3
    assert config.tls.ciphers == "ECDHE-ECDSA-AES128-GCM-SHA256"
    assert config.headers == (("X-Frame-Options", "sameorigin"),)
    assert set(config.users) == {"prometheus"}
    assert HASH not in repr(config)


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ("tls_server_config: [", "is not valid YAML (line 1)"),
        ("- a list", "the file must be a mapping"),
        ({"tls_config": {}}, "unknown key 'tls_config' in the file"),
        ({"rate_limit": {"interval": "1s"}}, "rate limiting is not supported"),
        ({"tls_server_config": {"cert_file": "x.crt"}}, "needs both cert_file and key_file"),
        ({"tls_server_config": {"cert": "PEM", "key": "PEM"}}, "as a file: cert_file"),
        ({"tls_server_config": "CERTS"}, "tls_server_config must be a mapping"),
        ({"basic_auth_users": {"prometheus": "plain-text"}}, "is not a bcrypt hash"),
        ({"http_server_config": {"headers": {"Server": "x"}}}, "Server cannot be set"),
        ({"http_server_config": {"headers": {"X-Frame-Options": "allow"}}}, "deny, sameorigin"),
    ],
)
def test_a_mistake_is_named_in_one_line(tmp_path: Path, document: object, problem: str) -> None:
    with pytest.raises(WebConfigError) as error:
        load_web_config(write(tmp_path, document))
    message = str(error.value)
    assert "\n" not in message
    assert problem in message


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"client_auth_type": "RequireAnyClientCert"}, "not supported"),
        ({"client_auth_type": "RequireAndVerifyClientCert"}, "needs client_ca_file"),
        ({"client_auth_type": "Sometimes"}, "is not one of NoClientCert"),
        ({"client_ca_file": "ca.crt"}, "client_auth_type is NoClientCert"),
        ({"client_allowed_sans": ["x"]}, "needs client_auth_type RequireAndVerifyClientCert"),
        ({"min_version": "TLS13", "max_version": "TLS12"}, "min_version is above max_version"),
        ({"min_version": "SSL3"}, "'SSL3' is not one of TLS10"),
        ({"cipher_suites": ["TLS_RSA_WITH_RC4_128_SHA"]}, "is not a TLS 1.2 suite"),
        ({"curve_preferences": ["X25519", "CurveP256"]}, "at most one of"),
        ({"key_file": "/nonexistent.key"}, "cannot read /nonexistent.key: No such file"),
        ({"cert_file": "missing.crt"}, "missing.crt: No such file or directory"),
        (
            {"client_auth_type": "VerifyClientCertIfGiven", "client_ca_file": "/nope/ca.crt"},
            "cannot read /nope/ca.crt: No such file or directory",
        ),
    ],
)
def test_tls_mistakes_are_named(
    tmp_path: Path, certs: Certificates, extra: dict[str, object], problem: str
) -> None:
    with pytest.raises(WebConfigError, match=r"^tls_server_config") as error:
        load_web_config(write(tmp_path, {"tls_server_config": tls(certs, **extra)}))
    assert problem in str(error.value)


def test_a_key_that_does_not_match_the_certificate_is_refused_at_start(
    tmp_path: Path, certs: Certificates
) -> None:
    with pytest.raises(WebConfigError, match="SSLError"):
        load_web_config(
            write(tmp_path, {"tls_server_config": tls(certs, key_file=str(certs.client_key))})
        )


def test_a_bad_file_stops_run_with_one_line_and_exit_2(run_cli: RunCli, tmp_path: Path) -> None:
    path = write(tmp_path, {"basic_auth_users": {"prometheus": "hunter2"}})
    code, out, err = run_cli("run", "--web-config-file", str(path))
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1
    assert "--web-config-file" in err
    assert "'prometheus' is not a bcrypt hash" in err
    assert "hunter2" not in err
    code, _, err = run_cli("run", "--web-config-file", str(tmp_path / "missing.yml"))
    assert code == 2
    assert "cannot read" in err


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth_checks_users_and_passwords() -> None:
    auth = BasicAuth({"prometheus": HASH.encode()})
    assert auth.allows(basic("prometheus", "scrape-pw"))
    for header in [
        None,
        "",
        basic("prometheus", "wrong"),
        basic("grafana", "scrape-pw"),
        "Bearer token",
        "Basic !!!not-base64",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        basic("prometheus", "x" * 100),  # over bcrypt's 72 bytes
    ]:
        assert not auth.allows(header), header


def test_a_verified_password_is_remembered_so_scrapes_stay_fast() -> None:
    slow = bcrypt.hashpw(b"scrape-pw", bcrypt.gensalt(12)).decode()  # ~0.3 s per check
    auth = BasicAuth({"prometheus": slow.encode()})
    started = time.monotonic()
    assert auth.allows(basic("prometheus", "scrape-pw"))
    first = time.monotonic() - started
    started = time.monotonic()
    for _ in range(100):
        assert auth.allows(basic("prometheus", "scrape-pw"))
    assert time.monotonic() - started < first / 10
    assert not auth.allows(basic("prometheus", "scrape-pw2"))  # not a prefix match
