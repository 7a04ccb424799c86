"""Options shared by the commands: parsing, validation, and the settings built from them."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
import structlog
from click.core import ParameterSource

from lock_monitor import logs
from lock_monitor.config import REDIS_SCHEMES, RedisSettings, ScanSettings
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


# --- validation callbacks -----------------------------------------------------------------


def _redis_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A usable redis:// or rediss:// URL. An error names the problem only, never any part of
    the URL: a password with a `/`, `?` or `#` in it would be split across the parts."""
    if value is None:
        return None
    problem = url_problem(value)
    if problem:
        raise click.BadParameter(problem)
    if urlsplit(value).password and _from_command_line(ctx, param):
        raise click.BadParameter(
            "a password in the URL on the command line shows in `ps`: set the URL in "
            "LOCK_MONITOR_REDIS_URL instead, or the password in REDIS_PASSWORD or a file "
            "(--redis-password-file)"
        )
    return value


def url_problem(url: str) -> str | None:
    """What is wrong with a Redis URL, in words that quote none of it; None if nothing."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        if url.lower().startswith(("redis:", "rediss:")):
            return "write two slashes after the scheme: redis://HOST[:PORT][/DB]"
        return "not a URL: expected redis://HOST[:PORT][/DB], or rediss://... for TLS"
    if scheme not in REDIS_SCHEMES:
        if scheme.lower() in REDIS_SCHEMES:
            return "write the scheme in lower case: redis:// or rediss://"
        return "the scheme must be redis:// or rediss:// (TLS)"
    authority_end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    if "@" in rest[authority_end:]:
        return (
            "the user name or password holds a '/', '?' or '#': percent-encode it (%2F, %3F, "
            "%23), or pass the password in REDIS_PASSWORD or --redis-password-file"
        )
    try:
        parts = urlsplit(url)
    except ValueError:
        return (
            "the host cannot be read: an IPv6 address goes in brackets (redis://[::1]:6379/0), "
            "and a '[' or ']' in a password must be percent-encoded (%5B, %5D)"
        )
    if not parts.hostname:
        return "the URL names no host: redis://HOST[:PORT][/DB]"
    try:
        port_ok = parts.port != 0
    except ValueError:
        port_ok = False
    if not port_ok:
        return "a port is a number from 1 to 65535"
    database = parts.path.strip("/")
    if database and not database.isdigit():
        return "the database (the path) must be a number, such as /0"
    if parts.query or parts.fragment:
        # redis-py lets URL options override ours (ssl_cert_reqs=none, socket_timeout=600),
        # silently turning off TLS checks or timeouts: each has an option of its own here.
        return "options in the URL are not accepted; use the --redis-* options"
    return None


def _from_command_line(ctx: click.Context, param: click.Parameter) -> bool:
    return ctx.get_parameter_source(param.name or "") is ParameterSource.COMMANDLINE


def _default_redis_url() -> str:
    """The guide's backend convention: REDIS_HOST and REDIS_PORT, else localhost:6379."""
    host = os.environ.get("REDIS_HOST") or "localhost"
    port = os.environ.get("REDIS_PORT") or "6379"
    return f"redis://{host}:{port}/0"


def _not_empty(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.strip():
        raise click.BadParameter("must not be empty")
    return value


def _env_only(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Passwords on the command line show in `ps` and in pod specs: only the environment."""
    names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
    if value is not None and _from_command_line(ctx, param):
        raise click.BadParameter(f"pass the password in {names[-1]} or a password file, not here")
    return value


def _read_secret(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A mounted Secret: the file's content, without the trailing newline editors add."""
    if value is None:
        return None
    try:
        secret = Path(value).read_text().rstrip("\r\n")
    except OSError as exc:
        raise click.BadParameter(f"cannot read {value}: {exc.strerror}") from None
    if not secret:
        raise click.BadParameter(f"{value} is empty")
    return secret


class FiniteFloat(click.FloatRange):
    """A float range that also refuses nan and inf, which FloatRange lets through (every
    comparison with nan is false): `--interval nan` would otherwise spin against Redis."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class HostPort(click.ParamType):  # type: ignore[type-arg]
    name = "HOST:PORT"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, int]:
        if isinstance(value, tuple):
            return value
        host, _, port = str(value).rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            self.fail(f"{value!r} is not HOST:PORT", param, ctx)
        return host.strip("[]"), int(port)


EXISTING_FILE = click.Path(exists=True, dir_okay=False)
# One SCAN call at COUNT 10,000 costs Redis a few milliseconds at most; far larger counts make a
# single call block it (COUNT 1,000,000,000 over a million keys: 0.6 s in the slow log).
MAX_SCAN_COUNT = 10_000


def stack(decorators: Sequence[Callable[[Any], Any]], command: F) -> F:
    """Apply option decorators in the order they are listed (the order --help shows)."""
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def redis_options(command: F) -> F:
    """How to reach Redis: shared by every command that reads it."""
    decorators = [
        option(
            "--redis-url",
            default=_default_redis_url,
            callback=_redis_url,
            show_default="redis://$REDIS_HOST:$REDIS_PORT/0, else redis://localhost:6379/0",
            help="Redis to watch: redis:// or rediss:// (TLS). A cluster seed in cluster mode.",
        ),
        option(
            "--redis-mode",
            type=click.Choice(["standalone", "cluster", "sentinel"]),
            default="standalone",
            help="standalone: one server. cluster: --redis-url is any one node; every primary "
            "is read. sentinel: --sentinel and --sentinel-master find the primary; only the "
            "credentials and database of --redis-url are used.",
        ),
        option("--redis-username", help="ACL user name (see the README for a minimal user)."),
        option("--redis-password", hidden=True, envvar=["REDIS_PASSWORD"], callback=_env_only),
        option(
            "--redis-password-file",
            "redis_password_from_file",
            type=EXISTING_FILE,
            callback=_read_secret,
            help="File holding the password (a mounted Secret). Or set REDIS_PASSWORD.",
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
            type=FiniteFloat(min=0, max=300, min_open=True),
            default=5.0,
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
        option("--sentinel-password", hidden=True, callback=_env_only),
        option(
            "--sentinel-password-file",
            "sentinel_password_from_file",
            type=EXISTING_FILE,
            callback=_read_secret,
            help="File holding the Sentinels' own password.",
        ),
    ]
    return stack(decorators, command)


def scan_options(command: F) -> F:
    """What a pass looks for and how it classifies what it finds."""
    decorators = [
        option(
            "--pattern",
            default="lock:appointment:*",
            callback=_not_empty,
            help="SCAN MATCH pattern of the lock keys.",
        ),
        STUCK_THRESHOLD,
        option(
            "--scan-count",
            type=click.IntRange(min=1, max=MAX_SCAN_COUNT),
            default=1000,
            help="SCAN COUNT: keys Redis examines per call (a bound on each call's work).",
        ),
    ]
    return stack(decorators, command)


STUCK_THRESHOLD = option(
    "--stuck-threshold",
    type=FiniteFloat(min=0),
    default=30.0,
    help="Seconds after which a held lock counts as stuck.",
)


def interval_option(default: float) -> Callable[[F], F]:
    return option(
        "--interval",
        type=FiniteFloat(min=0, max=86_400, min_open=True),
        default=default,
        help="Seconds from the end of one pass to the start of the next.",
    )


def port_option(command: F) -> F:
    return option(
        "--port",
        type=click.IntRange(0, 65535),
        default=9150,
        help="Port to serve /metrics, /healthz, /readyz, / and /locks on (0: any free port).",
    )(command)


def log_options(command: F) -> F:
    """How the process logs: shared by the long-running commands."""
    decorators = [
        option(
            "--log-level",
            type=click.Choice(logs.LEVELS, case_sensitive=False),
            default="info",
            help="Least severe log level to print.",
        ),
        option(
            "--log-format",
            type=click.Choice(["auto", "json", "console"]),
            default="auto",
            help="auto: JSON lines unless stderr is a terminal.",
        ),
    ]
    return stack(decorators, command)


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
        interval=params.get("interval", ScanSettings.interval),
        max_redis_load=params.get("max_redis_load", ScanSettings.max_redis_load),
    )
