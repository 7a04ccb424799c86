"""Every default and limit, and the settings built from them: immutable, safe to log through
`redacted()`.

The settings, the command-line options and their --help all read the values here, so each
is written once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, get_args
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from lock_monitor.webconfig import WebConfig

RedisMode = Literal["standalone", "cluster", "sentinel"]
REDIS_MODES: tuple[RedisMode, ...] = get_args(RedisMode)
EventsMode = Literal["auto", "on", "off"]
EVENTS_MODES: tuple[EventsMode, ...] = get_args(EventsMode)
REDIS_SCHEMES = ("redis", "rediss")
ERROR_TEXT_LIMIT = 300  # characters of an error text kept, after the passwords are removed

# Redis: the backend's REDIS_HOST and REDIS_PORT convention falls back to these.
DEFAULT_REDIS_HOST = "localhost"
DEFAULT_REDIS_PORT = 6379
DEFAULT_REDIS_URL = f"redis://{DEFAULT_REDIS_HOST}:{DEFAULT_REDIS_PORT}/0"
DEFAULT_REDIS_MODE: RedisMode = "standalone"
DEFAULT_REDIS_TIMEOUT = 5.0
MAX_REDIS_TIMEOUT = 300.0

# A pass: what it looks for and how hard it may press on Redis.
LOCK_KEY_PREFIX = "lock:appointment:"
DEFAULT_PATTERN = LOCK_KEY_PREFIX + "*"
DEFAULT_SCAN_COUNT = 1000
# One SCAN call at COUNT 10,000 costs Redis a few milliseconds at most; far larger counts make a
# single call block it (COUNT 1,000,000,000 over a million keys: 0.6 s in the slow log).
MAX_SCAN_COUNT = 10_000
DEFAULT_STUCK_THRESHOLD = 30.0
DEFAULT_INTERVAL = 5.0
MAX_INTERVAL = 86_400.0
DEFAULT_MAX_REDIS_LOAD = 0.05
DEFAULT_EVENTS: EventsMode = "auto"  # follow keyspace events between passes (docs/events.md)
DEFAULT_WATCH_EVERY = 2.0  # seconds between refreshes of `locks --watch`
DEFAULT_LOCKS_LIMIT = 100  # locks `locks` prints by default: the oldest (the counts cover all)
# Between two successful passes a healthy monitor waits at most MAX_PACED_WAIT_SECONDS (or
# --interval, if longer) and reads for at most --pass-timeout. By default the two fit in
# LockMonitorStale's 2 minutes less one scrape (the alert sees a pass a scrape late; the guide
# scrapes every 15 s), so the alert cannot fire on a monitor whose passes succeed.
STALE_ALERT_SECONDS = 120.0
SCRAPE_ALLOWANCE_SECONDS = 15.0
MAX_PACED_WAIT_SECONDS = 60.0
MIN_PASS_TIMEOUT = 30.0
# A pass that gets further than this was fed by a runaway keyspace or a hostile server (a
# SCAN cursor that never comes back to 0): it fails rather than grow memory without bound.
MAX_PAGES_PER_PASS = 10_000_000
MAX_KEYS_PER_PASS = 10_000_000


def default_pass_timeout(interval: float) -> float:
    """--pass-timeout when not given: what is left of the Stale budget after the longest wait."""
    budget = STALE_ALERT_SECONDS - SCRAPE_ALLOWANCE_SECONDS
    return max(MIN_PASS_TIMEOUT, budget - max(interval, MAX_PACED_WAIT_SECONDS))


# HTTP and logs.
DEFAULT_LISTEN_ADDRESS = "0.0.0.0"
DEFAULT_PORT = 9150
DEFAULT_LOG_LEVEL = "info"
DEFAULT_LOG_FORMAT: Final = "auto"  # Final: its type is the literal, a logs.LogFormat

# The demo: one machine, quick passes, only reachable from it.
DEMO_INTERVAL = 1.0
DEMO_LISTEN_ADDRESS = "127.0.0.1"

# Backups: the CronJobs' volume, and how many days of each kind are kept.
DEFAULT_BACKUP_DIR = "/backup"
DEFAULT_REDIS_BACKUP_KEEP_DAYS = 7
DEFAULT_SQLITE_BACKUP_KEEP_DAYS = 14
# By default a restore decompresses at most this many times the size of the database it
# replaces, and at least RESTORE_MIN_MAX_SIZE bytes: room for any real growth, a bound on a
# gzip bomb.
RESTORE_MAX_SIZE_FACTOR = 10
RESTORE_MIN_MAX_SIZE = 1 << 30


def url_without_secrets(url: str) -> str:
    """The URL with any password (and query options) removed, for logs, pages and errors."""
    parts = urlsplit(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    netloc = f"{user}@{hostport}" if user else hostport
    return parts._replace(netloc=netloc, query="").geturl()


@dataclass(frozen=True)
class RedisSettings:
    url: str | None = DEFAULT_REDIS_URL
    mode: RedisMode = DEFAULT_REDIS_MODE
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_insecure: bool = False
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_REDIS_TIMEOUT

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

    def user(self) -> str | None:
        """The ACL user the connection logs in as: redis-py lets a user in the URL win over
        --redis-username, except with Sentinel, where our options are laid over the URL's."""
        in_url = _url_username(self.url)
        if self.mode == "sentinel":
            return self.username or in_url
        return in_url or self.username

    def redacted(self) -> dict[str, object]:
        return {
            "target": self.target(),
            "mode": self.mode,
            "username": self.user(),
            "password": "<set>" if self.password or _url_password(self.url) else None,
            "tls_ca_file": self.ca_file,
            "tls_cert_file": self.cert_file,
            "tls_insecure": self.tls_insecure,
            "timeout_seconds": self.timeout,
        }


def _url_password(url: str | None) -> str | None:
    return urlsplit(url).password if url else None


def _url_username(url: str | None) -> str | None:
    """The user named in the URL (redis://user:pw@...), as redis-py reads it; None if none."""
    user = urlsplit(url).username if url else None
    return unquote(user) if user else None


@dataclass(frozen=True)
class DaemonSettings:
    """Where `lock-monitor locks --from` reads a running daemon, and how it proves who it is to
    a daemon behind --web-config-file: the CA that signed its certificate, a client
    certificate, basic auth."""

    url: str  # http(s)://HOST:PORT/locks, without user or password
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ScanSettings:
    pattern: str = DEFAULT_PATTERN
    count: int = DEFAULT_SCAN_COUNT
    stuck_threshold: float = DEFAULT_STUCK_THRESHOLD
    interval: float = DEFAULT_INTERVAL
    max_redis_load: float = DEFAULT_MAX_REDIS_LOAD
    events: EventsMode = DEFAULT_EVENTS
    pass_timeout: float | None = None  # None: default_pass_timeout(interval)

    @property
    def deadline_seconds(self) -> float:
        """How long one pass may take before it is stopped and counted as failed."""
        return self.pass_timeout or default_pass_timeout(self.interval)


@dataclass(frozen=True)
class ServerSettings:
    listen_address: str = DEFAULT_LISTEN_ADDRESS
    port: int = DEFAULT_PORT
    web: WebConfig | None = None  # --web-config-file: TLS and basic auth

    def redacted(self) -> dict[str, object]:
        return {
            "listen_address": self.listen_address,
            "port": self.port,
            "web_config_file": str(self.web.path) if self.web else None,
            "tls": bool(self.web and self.web.tls),
            "basic_auth_users": sorted(self.web.users) if self.web else [],
        }
