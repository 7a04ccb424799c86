"""Settings, as validated by the CLI: immutable, and safe to log through `redacted()`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit

RedisMode = Literal["standalone", "cluster", "sentinel"]
REDIS_SCHEMES = ("redis", "rediss")
ERROR_TEXT_LIMIT = 300  # characters of an error text kept, after the passwords are removed


def url_without_secrets(url: str) -> str:
    """The URL with any password (and query options) removed, for logs, pages and errors."""
    parts = urlsplit(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    netloc = f"{user}@{hostport}" if user else hostport
    return parts._replace(netloc=netloc, query="").geturl()


@dataclass(frozen=True)
class RedisSettings:
    url: str | None = "redis://localhost:6379/0"
    mode: RedisMode = "standalone"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_insecure: bool = False
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    timeout: float = 5.0

    def target(self) -> str:
        """What the monitor watches, in words an operator recognises, without secrets."""
        if self.mode == "sentinel":
            hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
            return f"sentinel://{hosts}/{self.sentinel_master}"
        return url_without_secrets(self.url or "")

    def scrub(self, text: str) -> str:
        """The first line of an error message, with every password of these settings removed,
        and cut to ERROR_TEXT_LIMIT characters: a server's error text is hostile too, and it is
        kept in the state, logged, and served on every page."""
        text = text.strip().splitlines()[0] if text.strip() else ""
        in_url = _url_password(self.url)
        secrets = (self.password, self.sentinel_password, in_url, in_url and unquote(in_url))
        for secret in sorted(filter(None, secrets), key=len, reverse=True):  # longest first
            text = text.replace(secret, "***")
        return text if len(text) <= ERROR_TEXT_LIMIT else text[:ERROR_TEXT_LIMIT] + "…"

    def redacted(self) -> dict[str, object]:
        return {
            "target": self.target(),
            "mode": self.mode,
            "username": self.username,
            "password": "<set>" if self.password or _url_password(self.url) else None,
            "tls_ca_file": self.ca_file,
            "tls_cert_file": self.cert_file,
            "tls_insecure": self.tls_insecure,
            "timeout_seconds": self.timeout,
        }


def _url_password(url: str | None) -> str | None:
    return urlsplit(url).password if url else None


@dataclass(frozen=True)
class ScanSettings:
    pattern: str = "lock:appointment:*"
    count: int = 1000
    stuck_threshold: float = 30.0
    interval: float = 5.0
    max_redis_load: float = 0.05


@dataclass(frozen=True)
class ServerSettings:
    listen_address: str = "0.0.0.0"
    port: int = 9150
