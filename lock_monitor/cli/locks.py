"""`lock-monitor locks`: the locks now, for a person or a script, from Redis or the daemon.

The options, then one call: what is read and what the exit code says are `triage`'s, the
`--watch` screen is `terminal`'s. Exit codes make it scriptable: 0 nothing stuck, 3 some
lock stuck, 4 none known to be stuck but some ages unknown, 1 nothing could be read.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import click

from lock_monitor import logs
from lock_monitor.cli.options import (
    daemon_options,
    daemon_settings,
    option,
    redis_options,
    redis_settings,
    scan_options,
    scan_settings,
)
from lock_monitor.cli.validation import EveryOccurrence, FiniteFloat, from_command_line
from lock_monitor.config import DEFAULT_LOCKS_LIMIT, DEFAULT_WATCH_EVERY, url_without_secrets
from lock_monitor.terminal import watch_table
from lock_monitor.triage import (
    exit_code,
    from_daemon,
    from_redis,
    stale_warning,
    stream,
    truncated,
)
from lock_monitor.views import UNKNOWN_AGE_WHY, lock_table


def daemon_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """http(s)://HOST:PORT of a running daemon, or its /locks: nothing else is opened. A
    password in it is refused on the command line, where `ps` shows it."""
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(f"{url_without_secrets(value)!r} is not an http(s):// URL")
    if parts.password is not None and from_command_line(ctx, param):
        raise click.BadParameter(
            "a password in the URL on the command line shows in `ps`: set it in "
            "LOCK_MONITOR_FROM_PASSWORD or --from-password-file (the user: --from-username)"
        )
    path = parts.path.rstrip("/")
    return parts._replace(path=path if path.endswith("/locks") else f"{path}/locks").geturl()


@click.command()
@redis_options
@scan_options
@option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@option("--stuck", "stuck_only", is_flag=True, help="Only the stuck locks.")
@option(
    "--from",
    "daemon",
    metavar="URL",
    cls=EveryOccurrence,
    callback=daemon_url,
    help="Print what the running daemon sees (http://HOST:9150): it knows the ages of locks "
    "whose values hold no timestamp. The Redis and pattern options are then not used.",
)
@daemon_options
@option("--watch", is_flag=True, help="Refresh the table in place until Ctrl-C.")
@option(
    "--limit",
    type=click.IntRange(min=0),
    default=None,
    help=f"Print the oldest N locks [default: {DEFAULT_LOCKS_LIMIT}]; the counts cover every lock.",
)
@option(
    "--all",
    "every_lock",
    is_flag=True,
    help="Print every lock read from Redis as a JSON line, unsorted, as it is read.",
)
@option(
    "--every",
    type=FiniteFloat(min=0.1, max=3600),
    default=DEFAULT_WATCH_EVERY,
    help="Seconds between refreshes with --watch.",
)
def locks(
    as_json: bool,
    stuck_only: bool,
    daemon: str | None,
    watch: bool,
    every: float,
    limit: int | None,
    every_lock: bool,
    **params: Any,
) -> int:
    """Print the locks now, oldest first, from Redis or from the running daemon.

    Exit code: 0 when no lock is stuck, 3 when some are, 4 when none is known to be stuck but
    some ages are unknown (use --from), 1 when the locks could not be read (or the daemon
    cannot read Redis now).
    """
    # What the imports built lives as long as the process: frozen, the collector never walks
    # it again, neither while a pass runs nor at exit.
    gc.freeze()
    logs.configure("warning", "auto")
    if every_lock and (limit is not None or daemon is not None or watch):
        raise click.UsageError(
            "--all prints every lock from Redis: leave out --limit, --from, --watch"
        )
    shown = DEFAULT_LOCKS_LIMIT if limit is None else limit
    read: Callable[[], dict[str, Any]]
    settings = daemon_settings(daemon, params)
    if settings is not None:
        read, source = partial(from_daemon, settings, stuck_only, shown), settings.url
    else:
        redis = redis_settings(params)
        if every_lock:
            return stream(redis, scan_settings(params), stuck_only)
        read = partial(from_redis, redis, scan_settings(params), stuck_only, shown)
        source = redis.target()
    if watch:
        return watch_table(read, every, source)
    document = read()
    if as_json:
        click.echo(json.dumps(document, indent=2))
        unknown = document["pass"].get("unknown_age", 0)
        if unknown:
            click.echo(f"lock-monitor: note: {unknown} of unknown age: {UNKNOWN_AGE_WHY}", err=True)
    else:
        click.echo(lock_table(document))
        note = truncated(document, stuck_only) if settings is None else None
        if note:
            click.echo(note)
    warning = stale_warning(document)
    if warning:
        click.echo(f"lock-monitor: warning: {warning}", err=True)
    return exit_code(document)
