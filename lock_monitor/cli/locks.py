"""`lock-monitor locks`: the locks now, for a person or a script, from Redis or the daemon.

One pass straight from Redis has never seen the locks before: a lock whose value holds no
timestamp has no age it can know, so it is shown as unknown, never as 0. The running daemon
has watched them: `--from` prints its view (its /locks document), with those ages known.
Exit codes make it scriptable: 0 nothing stuck, 3 some lock stuck, 4 none known to be stuck but
some ages unknown, 1 nothing could be read.
Only what is printed is kept: the oldest locks and the counts, or with `--all` nothing at
all, each lock being written as it is read; so a million locks cost little more memory than
a hundred.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import ssl
import sys
import time
import unicodedata
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from functools import partial
from http import HTTPStatus
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
from lock_monitor.config import (
    DEFAULT_WATCH_EVERY,
    DaemonSettings,
    RedisSettings,
    ScanSettings,
    url_without_secrets,
)
from lock_monitor.connection import connect
from lock_monitor.errors import OperatorError
from lock_monitor.locks import Lock
from lock_monitor.monitor import MonitorState
from lock_monitor.passes import PassFailed, PassResult, describe_error, read_pass
from lock_monitor.stuck_log import StuckMemory
from lock_monitor.tracker import LockTracker
from lock_monitor.views import (
    UNKNOWN_AGE_WHY,
    ago,
    current_counts,
    lock_entry,
    lock_table,
    printable,
    status_document,
)

EXIT_STUCK = 3
EXIT_UNKNOWN_AGES = 4  # no lock known to be stuck, but some ages one pass cannot know
FROM_TIMEOUT_SECONDS = 10.0
FROM_LIMIT_BYTES = 16 * 1024 * 1024  # a /locks document is small; a wrong URL may not be
SHOWN = 100  # locks printed by default: the oldest
UNAUTHORIZED_HINT = (
    "the daemon wants a user and password: LOCK_MONITOR_FROM_USERNAME (or --from-username) "
    "and LOCK_MONITOR_FROM_PASSWORD (or --from-password-file)"
)


def read_once(
    redis: RedisSettings,
    scan: ScanSettings,
    keep_oldest: int,
    each: Callable[[Sequence[Lock]], None] | None = None,
) -> PassResult:
    """One pass on a fresh connection; failing to connect fails the pass."""
    try:
        target = connect(redis)  # a cluster reads its topology from the seed here
    except Exception as exc:
        raise PassFailed({redis.target(): describe_error(exc, redis)}) from None
    try:
        tracker = LockTracker(scan.stuck_threshold, remember=False)
        return read_pass(target, scan, tracker, StuckMemory(), keep_oldest, each)
    finally:
        target.close()


def read_redis(
    redis: RedisSettings,
    scan: ScanSettings,
    keep_oldest: int,
    each: Callable[[Sequence[Lock]], None] | None = None,
) -> PassResult:
    """`read_once`, its failure worded for the command line."""
    target = redis.target()
    try:
        return read_once(redis, scan, keep_oldest, each)
    except PassFailed as failed:
        raise OperatorError(f"cannot read locks from {target}: {failed.reason(target)}") from None


def from_redis(
    redis: RedisSettings, scan: ScanSettings, stuck_only: bool, limit: int
) -> dict[str, Any]:
    target = redis.target()
    result = read_redis(redis, scan, limit)
    state = MonitorState(redis_up=True, snapshot=result.snapshot, nodes=result.nodes)
    shown = [lock for lock in result.snapshot.oldest if lock.stuck or not stuck_only]
    return status_document(
        state,
        target,
        redis.mode,
        time.time(),
        shown,
        one_pass=True,
        stuck_threshold=scan.stuck_threshold,
    )


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


def daemon_request(daemon: DaemonSettings) -> tuple[urllib.request.Request, ssl.SSLContext | None]:
    """The request for the daemon's /locks, with its credentials (never sent on to where a
    redirect points), and the TLS context that verifies the daemon (and shows our certificate)."""
    request = urllib.request.Request(daemon.url)  # noqa: S310 (daemon_url lets only http(s) in)
    if daemon.username is not None:
        token = base64.b64encode(f"{daemon.username}:{daemon.password}".encode()).decode()
        request.add_unredirected_header("Authorization", f"Basic {token}")
    if not daemon.url.startswith("https:"):
        return request, None
    context = ssl.create_default_context(cafile=daemon.ca_file)
    if daemon.cert_file:
        context.load_cert_chain(daemon.cert_file, daemon.key_file)
    return request, context


def from_daemon(daemon: DaemonSettings, stuck_only: bool, limit: int) -> dict[str, Any]:
    """The daemon's /locks document; a daemon that cannot read Redis now is a failure."""
    shown = daemon.url
    try:
        request, context = daemon_request(daemon)
        with urllib.request.urlopen(  # noqa: S310 (the request of daemon_request)
            request, timeout=FROM_TIMEOUT_SECONDS, context=context
        ) as response:
            body = response.read(FROM_LIMIT_BYTES + 1)
        if len(body) > FROM_LIMIT_BYTES:
            raise ValueError(f"the answer is larger than {FROM_LIMIT_BYTES} bytes")
        document = json.loads(body)
        if not isinstance(document, dict) or not {"pass", "locks", "redis_up"} <= set(document):
            raise ValueError("the answer is not a lock-monitor /locks document")
    except urllib.error.HTTPError as exc:
        hint = f": {UNAUTHORIZED_HINT}" if exc.code == HTTPStatus.UNAUTHORIZED else ""
        raise OperatorError(f"cannot read locks from {shown}: HTTP {exc.code}{hint}") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        hint = ""
        if isinstance(reason, ssl.SSLCertVerificationError) and not daemon.ca_file:
            hint = ": give the CA that signed the daemon's certificate with --from-ca-file"
        raise OperatorError(f"cannot read locks from {shown}: {reason}{hint}") from None
    last = document["pass"]
    if last is None:
        why = document.get("last_error") or "no pass has been tried yet"
        raise OperatorError(f"the daemon at {shown} has no successful pass yet: {why}")
    if stuck_only:
        document["locks"] = [lock for lock in document["locks"] if lock["stuck"]]
    document["locks"] = document["locks"][:limit]
    return document


def stream(redis: RedisSettings, scan: ScanSettings, stuck_only: bool) -> int:
    """`--all`: every lock as a JSON line as it is read, unsorted; nothing is kept."""

    def write(locks: Sequence[Lock]) -> None:
        entries = (lock_entry(lock, one_pass=True) for lock in locks)
        lines = [json.dumps(entry) for entry in entries if entry["stuck"] or not stuck_only]
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the command quietly
    snapshot = read_redis(redis, scan, 0, write).snapshot
    if snapshot.stuck:
        return EXIT_STUCK
    return EXIT_UNKNOWN_AGES if snapshot.first_seen else 0


def truncated(document: dict[str, Any], stuck_only: bool) -> str | None:
    """When more locks were counted than are shown: says so, and how to see them."""
    counted = document["pass"]["stuck" if stuck_only else "active"]
    shown = len(document["locks"])
    if shown >= counted:
        return None
    return f"(the oldest {shown} of {counted} locks: --limit N for more, --all for every lock)"


def stale_warning(document: dict[str, Any]) -> str | None:
    """When the daemon cannot read Redis: its data is old, and says how old."""
    if document["redis_up"] is not False:
        return None
    return (
        f"the daemon cannot read Redis ({printable(document['last_error'] or '')}): this is its "
        "last good pass, "
        f"from {ago(document['pass']['seconds_ago'])} ago, not the current state"
    )


def exit_code(document: dict[str, Any]) -> int:
    if document["redis_up"] is False:
        return 1  # the daemon's last good pass is not the current state
    if current_counts(document)["stuck"]:  # live while events are, as /metrics
        return EXIT_STUCK
    return EXIT_UNKNOWN_AGES if document["pass"].get("unknown_age") else 0


def screen(document: dict[str, Any], header: str, size: os.terminal_size) -> str:
    """The table, stuck locks first, fit to the terminal as `watch` does: nothing wraps (each
    line is cut to the width) and nothing scrolls (rows past the height give way to "… N
    more"), so the header, the stuck locks and the counts stay in sight."""
    table = lock_table(document).splitlines()
    shown = len(document["locks"])
    head, rows, tail = table[0], table[1 : shown + 1], table[shown + 1 :]
    warning = stale_warning(document)
    tail += [f"warning: {warning}"] if warning else []
    room = size.lines - 3 - len(tail)  # the header, a blank line and the table's head
    if len(rows) > room:
        kept = max(room - 1, 0)
        rows = [*rows[:kept], f"… {len(rows) - kept} more"]
    return fitted([header, "", head, *rows, *tail], size)


def fitted(lines: list[str], size: os.terminal_size) -> str:
    """The lines that fit the terminal's height, each cut to its width."""
    return "\n".join(fit(line, size.columns) for line in lines[: size.lines])


def fit(line: str, columns: int) -> str:
    """`line` cut to `columns` terminal cells (a wide character takes two), ending in "…"."""
    widths = [_cells(char) for char in line]
    if sum(widths) <= columns:
        return line
    used, end = 0, 0
    while end < len(line) and used + widths[end] <= columns - 1:
        used += widths[end]
        end += 1
    return line[:end] + "…"


def _cells(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


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
    help=f"Print the oldest N locks [default: {SHOWN}]; the counts cover every lock.",
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
    logs.configure("warning", "auto")
    if every_lock and (limit is not None or daemon is not None or watch):
        raise click.UsageError(
            "--all prints every lock from Redis: leave out --limit, --from, --watch"
        )
    shown = SHOWN if limit is None else limit
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


def watch_table(read: Callable[[], dict[str, Any]], every: float, source: str) -> int:
    """Like `watch`: clear, print, wait; a failed read is shown in place and retried."""
    try:
        while True:
            header = f"Every {every:g}s: lock-monitor locks ({source})  {time.strftime('%H:%M:%S')}"
            size = shutil.get_terminal_size()
            try:
                text = screen(read(), header, size)
            except OperatorError as exc:
                text = fitted([header, "", f"error: {printable(str(exc))}"], size)
            click.clear()
            click.echo(text, nl=False)  # a last newline would scroll the first line away
            time.sleep(every)
    except KeyboardInterrupt:
        click.echo()
        return 0
