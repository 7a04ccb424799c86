"""TLS and basic auth on the HTTP endpoint, from the web configuration file Prometheus exporters
share (prometheus/exporter-toolkit's format), so a node_exporter or redis_exporter user's file
works here as it is. Everything is checked when the file is loaded, at start; a certificate
rotated on disk (a Kubernetes Secret) is picked up by the next connection, without a restart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml


class WebConfigError(ValueError):
    """What is wrong with the file, in one line."""


TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Go's names of the TLS 1.2 suites it supports (crypto/tls CipherSuites), as OpenSSL names them.
# TLS 1.3 suites are not configurable, in Go as in OpenSSL's cipher list.
CIPHER_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1"}
# Headers the file may set (exporter-toolkit's list), with the values it accepts, if limited.
HEADERS: dict[str, tuple[str, ...] | None] = {
    "Content-Security-Policy": None,
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-Content-Type-Options": ("nosniff",),
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}
BCRYPT_HASH = re.compile(r"\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}")
# The toolkit's keys this exporter does not implement, and what to do instead.
UNSUPPORTED = {
    "cert": "give the certificate as a file: cert_file",
    "key": "give the key as a file: key_file",
    "rate_limit": "rate limiting is not supported here; MAX_CONNECTIONS bounds the load",
}


@dataclass(frozen=True)
class TlsSettings:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    client_ca: str | None = None  # inline PEM
    client_auth: ssl.VerifyMode = ssl.CERT_NONE
    allowed_sans: frozenset[str] = frozenset()
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    ciphers: str | None = None
    prefer_server_ciphers: bool = True
    curve: str | None = None

    def files(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.cert_file, self.key_file, self.client_ca_file) if p)

    def context(self) -> ssl.SSLContext:
        """A server context from the files as they are now; OSError or SSLError if unusable."""
        for path in self.files():  # OpenSSL's own error would not say which file is missing
            path.open("rb").close()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version, context.maximum_version = self.min_version, self.max_version
        context.load_cert_chain(self.cert_file, self.key_file)
        if self.client_auth != ssl.CERT_NONE:
            context.load_verify_locations(cafile=self.client_ca_file, cadata=self.client_ca)
            context.verify_mode = self.client_auth
        if self.ciphers:
            context.set_ciphers(self.ciphers)
        if self.prefer_server_ciphers:
            context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        else:
            context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
        if self.curve:
            context.set_ecdh_curve(self.curve)
        return context

    def san_allowed(self, sock: ssl.SSLSocket) -> bool:
        """The client's certificate names one of client_allowed_sans (when any are set)."""
        if not self.allowed_sans:
            return True
        names: Any = (sock.getpeercert() or {}).get("subjectAltName", ())
        return any(value in self.allowed_sans for _, value in names)


def tls_problem(exc: OSError) -> str:
    """Why the TLS files cannot be used, in one line naming the file when one is missing."""
    if exc.filename and not isinstance(exc, ssl.SSLError):
        return f"cannot read {exc.filename}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"


class ServerTls:
    """The current server context: rebuilt when a file changes on disk (a rotated certificate),
    kept as it was while the new files do not load (half-way through a rotation)."""

    def __init__(self, settings: TlsSettings, on_reload_error: Callable[[str], None]) -> None:
        self.settings = settings
        self._on_reload_error = on_reload_error
        self._lock = threading.Lock()
        self._stamp = self._files_stamp()
        self._context = settings.context()
        self._failed_stamp: tuple[Any, ...] | None = None

    def context(self) -> ssl.SSLContext:
        stamp = self._files_stamp()
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self._reload(stamp)
        return self._context

    def _reload(self, stamp: tuple[Any, ...]) -> None:
        try:
            self._context = self.settings.context()
        except (OSError, ssl.SSLError) as exc:
            if stamp != self._failed_stamp:  # said once per state of the files
                self._failed_stamp = stamp
                self._on_reload_error(tls_problem(exc))
            return
        self._stamp = stamp

    def _files_stamp(self) -> tuple[Any, ...]:
        stamp: list[tuple[int, int, int] | None] = []
        for path in self.settings.files():
            try:
                status = os.stat(path)
                stamp.append((status.st_ino, status.st_mtime_ns, status.st_size))
            except OSError:
                stamp.append(None)
        return tuple(stamp)


@dataclass
class BasicAuth:
    """Users and their bcrypt hashes. A verified user and password is remembered (a digest of
    them), so a scrape every few seconds costs one bcrypt check, not one per scrape."""

    users: Mapping[str, bytes]
    _verified: set[bytes] = field(default_factory=set)

    REMEMBERED = 64

    def allows(self, authorization: str | None) -> bool:
        credentials = _basic_credentials(authorization)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self.users.get(user.decode("utf-8", "replace"))
        digest = hashlib.sha256(b"\0".join([user, password, hashed or b""])).digest()
        if hashed is not None and digest in self._verified:
            return True
        # An unknown user is checked against a real hash all the same (never accepted), so a
        # wrong user name takes as long as a wrong password.
        decoy = next(iter(self.users.values()))
        try:
            valid = bcrypt.checkpw(password, hashed or decoy) and hashed is not None
        except ValueError:  # a password bcrypt refuses (over 72 bytes)
            return False
        if valid:
            if len(self._verified) >= self.REMEMBERED:
                self._verified.clear()
            self._verified.add(digest)
        return valid


def _basic_credentials(authorization: str | None) -> tuple[bytes, bytes] | None:
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, colon, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return None
    return (user, password) if colon else None


@dataclass(frozen=True)
class WebConfig:
    path: Path
    tls: TlsSettings | None = None
    users: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    headers: tuple[tuple[str, str], ...] = ()


def load_web_config(path: str | Path) -> WebConfig:
    """Read and check the file; WebConfigError names the first problem. Relative paths in it
    are relative to the file's directory, as with the toolkit."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise WebConfigError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise WebConfigError(f"{path} is not valid YAML{where}") from None
    top = _mapping(document, "the file")
    _known(top, {"tls_server_config", "http_server_config", "basic_auth_users"}, "the file")
    tls = _tls(_mapping(top.get("tls_server_config") or {}, "tls_server_config"), path.parent)
    users = _users(_mapping(top.get("basic_auth_users") or {}, "basic_auth_users"))
    headers = _headers(_mapping(top.get("http_server_config") or {}, "http_server_config"))
    if tls is not None:
        try:
            tls.context()
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(f"tls_server_config: {tls_problem(exc)}") from None
    return WebConfig(path, tls, users, headers)


def _mapping(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise WebConfigError(f"{where} must be a mapping of names to values")
    return value


def _known(section: Mapping[str, object], keys: set[str], where: str) -> None:
    for key in section:
        if key in UNSUPPORTED:
            raise WebConfigError(f"{key} in {where}: {UNSUPPORTED[key]}")
        if key not in keys:
            raise WebConfigError(f"unknown key {key!r} in {where}")


def _text(section: Mapping[str, object], key: str, where: str) -> str | None:
    value = section.get(key)
    if value is not None and not isinstance(value, str):
        raise WebConfigError(f"{where}.{key} must be a string")
    return value


def _strings(section: Mapping[str, object], key: str, where: str) -> list[str]:
    value = section.get(key) or []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise WebConfigError(f"{where}.{key} must be a list of strings")
    return value


def _choice(name: str | None, choices: Mapping[str, Any], key: str, default: Any) -> Any:
    if name is None:
        return default
    if name not in choices:
        raise WebConfigError(
            f"tls_server_config.{key}: {name!r} is not one of {', '.join(choices)}"
        )
    return choices[name]


def _tls(section: dict[str, Any], base: Path) -> TlsSettings | None:
    where = "tls_server_config"
    if not section:
        return None
    _known(
        section,
        {
            "cert_file", "key_file", "client_ca_file", "client_ca", "client_auth_type",
            "client_allowed_sans", "min_version", "max_version", "cipher_suites",
            "prefer_server_cipher_suites", "curve_preferences",
        },
        where,
    )  # fmt: skip
    cert, key = _text(section, "cert_file", where), _text(section, "key_file", where)
    if not cert or not key:
        raise WebConfigError(f"{where} needs both cert_file and key_file")
    ca_file = _text(section, "client_ca_file", where)
    ca_inline = _text(section, "client_ca", where)
    auth_name = _text(section, "client_auth_type", where)
    if auth_name in ("RequestClientCert", "RequireAnyClientCert"):
        raise WebConfigError(
            f"{where}.client_auth_type {auth_name} (a client certificate taken without "
            "verifying it) is not supported: use RequireAndVerifyClientCert with client_ca_file"
        )
    client_auth = _choice(auth_name, CLIENT_AUTH, "client_auth_type", ssl.CERT_NONE)
    if (ca_file or ca_inline) and client_auth == ssl.CERT_NONE:
        raise WebConfigError(f"{where}: a client CA is set but client_auth_type is NoClientCert")
    if client_auth != ssl.CERT_NONE and not (ca_file or ca_inline):
        raise WebConfigError(f"{where}.client_auth_type {auth_name} needs client_ca_file")
    sans = _strings(section, "client_allowed_sans", where)
    if sans and client_auth != ssl.CERT_REQUIRED:
        raise WebConfigError(
            f"{where}.client_allowed_sans needs client_auth_type RequireAndVerifyClientCert"
        )
    suites = _strings(section, "cipher_suites", where)
    unknown = [suite for suite in suites if suite not in CIPHER_SUITES]
    if unknown:
        raise WebConfigError(f"{where}.cipher_suites: {unknown[0]!r} is not a TLS 1.2 suite")
    curves = _strings(section, "curve_preferences", where)
    if len(curves) > 1 or (curves and curves[0] not in CURVES):
        raise WebConfigError(
            f"{where}.curve_preferences: at most one of {', '.join(CURVES)} can be set here"
        )
    prefer = section.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        raise WebConfigError(f"{where}.prefer_server_cipher_suites must be true or false")
    settings = TlsSettings(
        cert_file=base / cert,
        key_file=base / key,
        client_ca_file=base / ca_file if ca_file else None,
        client_ca=ca_inline,
        client_auth=client_auth,
        allowed_sans=frozenset(sans),
        min_version=_choice(
            _text(section, "min_version", where),
            TLS_VERSIONS,
            "min_version",
            ssl.TLSVersion.TLSv1_2,
        ),
        max_version=_choice(
            _text(section, "max_version", where),
            TLS_VERSIONS,
            "max_version",
            ssl.TLSVersion.TLSv1_3,
        ),
        ciphers=":".join(CIPHER_SUITES[suite] for suite in suites) or None,
        prefer_server_ciphers=prefer,
        curve=CURVES[curves[0]] if curves else None,
    )
    if settings.min_version > settings.max_version:
        raise WebConfigError(f"{where}: min_version is above max_version")
    return settings


def _users(section: dict[str, Any]) -> dict[str, bytes]:
    users = {}
    for user, hashed in section.items():
        if not isinstance(hashed, str) or not BCRYPT_HASH.fullmatch(hashed):
            raise WebConfigError(
                f"basic_auth_users: the password of {user!r} is not a bcrypt hash "
                "(make one with: htpasswd -nBC 10 '' | tr -d ':\\n')"
            )
        users[user] = hashed.encode()
    return users


def _headers(section: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    where = "http_server_config"
    _known(section, {"http2", "headers"}, where)
    if not isinstance(section.get("http2", True), bool):
        raise WebConfigError(f"{where}.http2 must be true or false")
    headers = _mapping(section.get("headers") or {}, f"{where}.headers")
    chosen = []
    for name, value in headers.items():
        if name not in HEADERS:
            raise WebConfigError(
                f"{where}.headers: {name} cannot be set (only {', '.join(HEADERS)})"
            )
        if not isinstance(value, str):
            raise WebConfigError(f"{where}.headers.{name} must be a string")
        allowed = HEADERS[name]
        if allowed and value and value.lower() not in allowed:
            raise WebConfigError(f"{where}.headers.{name} must be one of {', '.join(allowed)}")
        if value:  # blank: the exporter's own value stays
            chosen.append((name, value))
    return tuple(chosen)
