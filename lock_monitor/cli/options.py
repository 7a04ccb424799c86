"""Options shared by the commands, with their defaults from `config`, and the settings built
from them. What each value must look like is in `validation`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar, get_args
from urllib.parse import unquote, urlsplit

import click
import structlog
from click.core import ParameterSource

from lock_monitor import logs
from lock_monitor.cli.validation import (
    EXISTING_FILE,
    EveryOccurrence,
    FiniteFloat,
    HostPort,
    ListenAddress,
    env_only,
    not_empty,
    read_secret,
    redis_url,
    web_config,
)
from lock_monitor.config import (
    DEFAULT_EVENTS,
    DEFAULT_INTERVAL,
    DEFAULT_LISTEN_ADDRESS,
    DEFAULT_LOG_FORMAT,
    DEFAULT_LOG_LEVEL,
    DEFAULT_MAX_REDIS_LOAD,
    DEFAULT_PATTERN,
    DEFAULT_PORT,
    DEFAULT_REDIS_MODE,
    DEFAULT_REDIS_TIMEOUT,
    DEFAULT_REDIS_URL,
    DEFAULT_SCAN_COUNT,
    DEFAULT_STUCK_THRESHOLD,
    MAX_INTERVAL,
    MAX_PACED_WAIT_SECONDS,
    MAX_REDIS_TIMEOUT,
    MAX_SCAN_COUNT,
    MIN_PASS_TIMEOUT,
    REDIS_MODES,
    SCRAPE_ALLOWANCE_SECONDS,
    STALE_ALERT_SECONDS,
    DaemonSettings,
    RedisSettings,
    ScanSettings,
    ServerSettings,
    default_pass_timeout,
)
from lock_monitor.connection import uses_tls

ENV_PREFIX = "LOCK_MONITOR_"
F = TypeVar("F", bound=Callable[..., Any])


def option(*decls: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option that can also be set as LOCK_MONITOR_<OPTION>, shown in --help."""
    name = next(d for d in decls if d.startswith("--"))[2:]
    env = ENV_PREFIX + name.upper().replace("-", "_")
    extra = kwargs.pop("envvar", [])
    kwargs.setdefault("show_default", "default" in kwargs and not kwargs.get("is_flag"))
    return click.option(*decls, envvar=[env, *extra] if extra else env, show_envvar=True, **kwargs)


def stack(decorators: Sequence[Callable[[Any], Any]], command: F) -> F:
    """Apply option decorators in the order they are listed (the order --help shows)."""
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def password_options(
    name: str, file_help: str, envvar: list[str] | None = None
) -> list[Callable[[F], F]]:
    """--NAME-password, from the environment only (the command line shows in `ps`), and
    --NAME-password-file, a mounted Secret."""
    extra = {"envvar": envvar} if envvar else {}
    return [
        option(f"--{name}-password", hidden=True, callback=env_only, **extra),
        option(
            f"--{name}-password-file",
            f"{name}_password_from_file",
            type=EXISTING_FILE,
            callback=read_secret,
            help=file_help,
        ),
    ]


def redis_options(command: F) -> F:
    """How to reach Redis: shared by every command that reads it."""
    decorators = [
        option(
            "--redis-url",
            cls=EveryOccurrence,
            callback=redis_url,
            show_default=f"redis://$REDIS_HOST:$REDIS_PORT/0, else {DEFAULT_REDIS_URL}",
            help="Redis to watch: redis:// or rediss:// (TLS). A cluster seed in cluster mode.",
        ),
        option(
            "--redis-mode",
            type=click.Choice(REDIS_MODES),
            default=DEFAULT_REDIS_MODE,
            help="standalone: one server. cluster: --redis-url is any one node; every primary "
            "is read. sentinel: --sentinel and --sentinel-master find the primary; only the "
            "credentials and database of --redis-url are used.",
        ),
        option("--redis-username", help="ACL user name (see the README for a minimal user)."),
        *password_options(
            "redis",
            "File holding the password (a mounted Secret); it wins over REDIS_PASSWORD.",
            envvar=["REDIS_PASSWORD"],
        ),
        option("--redis-ca-file", type=EXISTING_FILE, help="CA bundle to verify the TLS server."),
        option("--redis-cert-file", type=EXISTING_FILE, help="Client certificate (mutual TLS)."),
        option("--redis-key-file", type=EXISTING_FILE, help="Client private key (mutual TLS)."),
        option(
            "--redis-tls-insecure",
            is_flag=True,
            help="Do not verify the server's certificate (logs a warning; tests only).",
        ),
        option(
            "--redis-timeout",
            type=FiniteFloat(min=0, max=MAX_REDIS_TIMEOUT, min_open=True),
            default=DEFAULT_REDIS_TIMEOUT,
            help="Seconds to wait for a connection or an answer before failing the pass.",
        ),
        option(
            "--sentinel",
            "sentinels",
            type=HostPort(),
            multiple=True,
            help="A Sentinel to ask for the primary (repeat for each; sentinel mode).",
        ),
        option("--sentinel-master", help="The master set name the Sentinels watch."),
        *password_options("sentinel", "File holding the Sentinels' own password."),
    ]
    return stack(decorators, command)


def daemon_options(command: F) -> F:
    """How `locks --from` proves itself to a daemon behind --web-config-file."""
    decorators = [
        option(
            "--from-ca-file",
            type=EXISTING_FILE,
            help="CA bundle to verify the certificate of an https:// --from daemon.",
        ),
        option(
            "--from-cert-file",
            type=EXISTING_FILE,
            help="Client certificate, for a --from daemon that asks for one (mutual TLS).",
        ),
        option("--from-key-file", type=EXISTING_FILE, help="Client private key (mutual TLS)."),
        option("--from-username", help="Basic auth user of the --from daemon's web config."),
        *password_options(
            "from",
            "File holding the basic auth password; it wins over LOCK_MONITOR_FROM_PASSWORD.",
        ),
    ]
    return stack(decorators, command)


DAEMON_TLS_OPTIONS = ("from_ca_file", "from_cert_file", "from_key_file")
DAEMON_AUTH_OPTIONS = ("from_username", "from_password", "from_password_from_file")


def daemon_settings(url: str | None, params: dict[str, Any]) -> DaemonSettings | None:
    """How to read the daemon at `url` (a user and password in it, from the environment, are
    its basic auth credentials, as the options' are); None without --from."""
    if url is None:
        if any(params[name] for name in (*DAEMON_TLS_OPTIONS, *DAEMON_AUTH_OPTIONS)):
            raise click.UsageError("the --from-* options go with --from")
        return None
    parts = urlsplit(url)
    if any(params[name] for name in DAEMON_TLS_OPTIONS) and parts.scheme != "https":
        raise click.UsageError(
            "--from-ca-file, --from-cert-file and --from-key-file need an https:// --from URL"
        )
    if bool(params["from_cert_file"]) != bool(params["from_key_file"]):
        raise click.UsageError("--from-cert-file and --from-key-file go together")
    username = params["from_username"] or (unquote(parts.username) if parts.username else None)
    password = (
        params["from_password_from_file"]
        or params["from_password"]
        or (unquote(parts.password) if parts.password else None)
    )
    if password and not username:
        raise click.UsageError("a password for --from needs a user: --from-username")
    if username and not password:
        raise click.UsageError(
            "a user for --from needs a password: LOCK_MONITOR_FROM_PASSWORD or --from-password-file"
        )
    return DaemonSettings(
        url=parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl(),
        ca_file=params["from_ca_file"],
        cert_file=params["from_cert_file"],
        key_file=params["from_key_file"],
        username=username,
        password=password,
    )


STUCK_THRESHOLD = option(
    "--stuck-threshold",
    type=FiniteFloat(min=0),
    default=DEFAULT_STUCK_THRESHOLD,
    help="Seconds after which a held lock counts as stuck.",
)


def scan_options(command: F) -> F:
    """What a pass looks for and how it classifies what it finds."""
    decorators = [
        option(
            "--pattern",
            default=DEFAULT_PATTERN,
            callback=not_empty,
            help="SCAN MATCH pattern of the lock keys.",
        ),
        STUCK_THRESHOLD,
        option(
            "--scan-count",
            type=click.IntRange(min=1, max=MAX_SCAN_COUNT),
            default=DEFAULT_SCAN_COUNT,
            help="SCAN COUNT: keys Redis examines per call (a bound on each call's work).",
        ),
        option(
            "--pass-timeout",
            type=FiniteFloat(min=0, max=MAX_INTERVAL, min_open=True),
            show_default=f"{default_pass_timeout(DEFAULT_INTERVAL):g}",
            help="Seconds a pass may take before it is stopped and counted as failed. The "
            f"default keeps LockMonitorStale quiet while passes succeed: "
            f"{STALE_ALERT_SECONDS - SCRAPE_ALLOWANCE_SECONDS:g} s less the longest paced wait "
            f"({MAX_PACED_WAIT_SECONDS:g} s, or the interval if longer), at least "
            f"{MIN_PASS_TIMEOUT:g} s.",
        ),
    ]
    return stack(decorators, command)


def interval_option(default: float) -> Callable[[F], F]:
    return option(
        "--interval",
        type=FiniteFloat(min=0, max=MAX_INTERVAL, min_open=True),
        default=default,
        help="Seconds from the end of one pass to the start of the next.",
    )


def port_option(command: F) -> F:
    return option(
        "--port",
        type=click.IntRange(0, 65535),
        default=DEFAULT_PORT,
        help="Port to serve /metrics, /healthz, /readyz, / and /locks on (0: any free port).",
    )(command)


WEB_CONFIG_FILE = option(
    "--web-config-file",
    type=click.Path(dir_okay=False),
    callback=web_config,
    help="TLS and basic auth for the HTTP endpoint, in the web configuration format of "
    "Prometheus exporters (exporter-toolkit); /healthz and /readyz stay open for probes.",
)
LISTEN_ADDRESS = option(
    "--listen-address",
    type=ListenAddress(),
    default=DEFAULT_LISTEN_ADDRESS,
    help="Address to serve HTTP on. HOST:PORT or [IPv6]:PORT also sets the port, in place of "
    "--port.",
)


def log_options(command: F) -> F:
    """How the process logs: shared by the long-running commands."""
    decorators = [
        option(
            "--log-level",
            type=click.Choice(logs.LEVELS, case_sensitive=False),
            default=DEFAULT_LOG_LEVEL,
            help="Least severe log level to print.",
        ),
        option(
            "--log-format",
            type=click.Choice(get_args(logs.LogFormat)),
            default=DEFAULT_LOG_FORMAT,
            help="auto: JSON lines unless stderr is a terminal.",
        ),
    ]
    return stack(decorators, command)


def start_logging(params: dict[str, Any]) -> Any:
    """Configure logging from --log-level and --log-format; the logger the daemon logs to."""
    logs.configure(params["log_level"].lower(), params["log_format"])
    return structlog.get_logger("lock_monitor")


def redis_settings(params: dict[str, Any]) -> RedisSettings:
    """Combine the connection options, checking the ones that only make sense together."""
    mode = params["redis_mode"]
    if mode == "sentinel" and (not params["sentinels"] or not params["sentinel_master"]):
        raise click.UsageError("sentinel mode needs --sentinel HOST:PORT and --sentinel-master")
    if bool(params["redis_cert_file"]) != bool(params["redis_key_file"]):
        raise click.UsageError("--redis-cert-file and --redis-key-file go together")
    if mode == "cluster" and urlsplit(params["redis_url"]).path.strip("/") not in ("", "0"):
        raise click.UsageError("a Redis Cluster has only database 0: fix the --redis-url path")
    settings = RedisSettings(
        url=params["redis_url"],
        mode=mode,
        username=params["redis_username"],
        password=params["redis_password_from_file"] or params["redis_password"],
        ca_file=params["redis_ca_file"],
        cert_file=params["redis_cert_file"],
        key_file=params["redis_key_file"],
        tls_insecure=params["redis_tls_insecure"],
        sentinels=tuple(params["sentinels"]),
        sentinel_master=params["sentinel_master"],
        sentinel_password=params["sentinel_password_from_file"] or params["sentinel_password"],
        timeout=params["redis_timeout"],
    )
    if (settings.ca_file or settings.cert_file or settings.tls_insecure) and not uses_tls(settings):
        raise click.UsageError(
            "--redis-ca-file, --redis-cert-file and --redis-tls-insecure need a rediss:// URL"
        )
    if settings.tls_insecure:  # every command that reads Redis says so, once, at its start
        structlog.get_logger("lock_monitor").warning(
            "tls_verification_disabled", target=settings.target()
        )
    return settings


def scan_settings(params: dict[str, Any]) -> ScanSettings:
    return ScanSettings(
        pattern=params["pattern"],
        count=params["scan_count"],
        stuck_threshold=params["stuck_threshold"],
        interval=params.get("interval", DEFAULT_INTERVAL),
        max_redis_load=params.get("max_redis_load", DEFAULT_MAX_REDIS_LOAD),
        events=params.get("events", DEFAULT_EVENTS),
        pass_timeout=params["pass_timeout"],
    )


def server_settings(params: dict[str, Any]) -> ServerSettings:
    """Where to serve HTTP: a port in --listen-address stands in for --port, never beside it."""
    host, port = params["listen_address"]
    web = params.get("web_config_file")
    if port is None:
        return ServerSettings(host, params["port"], web)
    if click.get_current_context().get_parameter_source("port") is not ParameterSource.DEFAULT:
        raise click.UsageError(
            "the port is given twice, in --listen-address and in --port (or LOCK_MONITOR_PORT): "
            "keep one"
        )
    return ServerSettings(host, port, web)
