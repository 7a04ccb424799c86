"""`lock-monitor locks`: the locks now, for a person or a script, from Redis or the daemon.

One pass straight from Redis has never seen the locks before: a lock whose value holds no
timestamp has no age it can know, so it is shown as unknown, never as 0. The running daemon
has watched them: `--from` prints its view (its /locks document), with those ages known.
Exit codes make it scriptable: 0 nothing stuck, 3 some lock stuck, 1 nothing could be read.
Only what is printed is kept: the oldest locks and the counts, or with `--all` nothing at
all, each lock being written as it is read; so a million locks cost little more memory than
a hundred.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import click

from lock_monitor import logs
from lock_monitor.cli.options import (
    option,
    redis_options,
    redis_settings,
    scan_options,
    scan_settings,
)
from lock_monitor.cli.validation import FiniteFloat
from lock_monitor.config import (
    DEFAULT_WATCH_EVERY,
    RedisSettings,
    ScanSettings,
    url_without_secrets,
)
from lock_monitor.connection import connect
from lock_monitor.errors import OperatorError
from lock_monitor.locks import Lock, LockTracker
from lock_monitor.monitor import MonitorState
from lock_monitor.passes import PassFailed, PassResult, describe_error, read_pass
from lock_monitor.stuck_log import StuckMemory
from lock_monitor.views import (
    UNKNOWN_AGE_WHY,
    ago,
    lock_entry,
    lock_table,
    printable,
    status_document,
    stuck_first,
)

EXIT_STUCK = 3
FROM_TIMEOUT_SECONDS = 10.0
FROM_LIMIT_BYTES = 16 * 1024 * 1024  # a /locks document is small; a wrong URL may not be
SHOWN = 100  # locks printed by default: the oldest


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
    """http(s)://HOST:PORT of a running daemon, or its /locks: nothing else is opened."""
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(f"{url_without_secrets(value)!r} is not an http(s):// URL")
    path = parts.path.rstrip("/")
    return parts._replace(path=path if path.endswith("/locks") else f"{path}/locks").geturl()


def from_daemon(url: str, stuck_only: bool, limit: int) -> dict[str, Any]:
    """The daemon's /locks document; a daemon that cannot read Redis now is a failure."""
    shown = url_without_secrets(url)
    try:
        # daemon_url let only http(s) through
        with urllib.request.urlopen(url, timeout=FROM_TIMEOUT_SECONDS) as response:  # noqa: S310
            body = response.read(FROM_LIMIT_BYTES + 1)
        if len(body) > FROM_LIMIT_BYTES:
            raise ValueError(f"the answer is larger than {FROM_LIMIT_BYTES} bytes")
        document = json.loads(body)
        if not isinstance(document, dict) or not {"pass", "locks", "redis_up"} <= set(document):
            raise ValueError("the answer is not a lock-monitor /locks document")
    except urllib.error.HTTPError as exc:
        raise OperatorError(f"cannot read locks from {shown}: HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise OperatorError(f"cannot read locks from {shown}: {reason}") from None
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
    result = read_redis(redis, scan, 0, write)
    return EXIT_STUCK if result.snapshot.stuck else 0


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
    return EXIT_STUCK if document["pass"]["stuck"] else 0


def screen(document: dict[str, Any], header: str) -> str:
    """The table, stuck locks first, cut to the terminal's height under a `watch` header."""
    locks = stuck_first(document["locks"])
    room = max(shutil.get_terminal_size().lines - 7, 1)  # header, blank, head, summary, notes
    more = [f"… {len(locks) - room} more"] if len(locks) > room else []
    lines = lock_table(document | {"locks": locks[:room]}).splitlines()
    warning = stale_warning(document)
    notes = [f"warning: {warning}"] if warning else []
    return "\n".join(
        [header, "", lines[0], *lines[1 : room + 1], *more, *lines[room + 1 :], *notes]
    )


@click.command()
@redis_options
@scan_options
@option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@option("--stuck", "stuck_only", is_flag=True, help="Only the stuck locks.")
@option(
    "--from",
    "daemon",
    metavar="URL",
    callback=daemon_url,
    help="Print what the running daemon sees (http://HOST:9150): it knows the ages of locks "
    "whose values hold no timestamp. The Redis and pattern options are then not used.",
)
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

    Exit code: 0 when no lock is stuck, 3 when some are, 1 when the locks could not be read
    (or the daemon cannot read Redis now).
    """
    logs.configure("warning", "auto")
    if every_lock and (limit is not None or daemon is not None or watch):
        raise click.UsageError(
            "--all prints every lock from Redis: leave out --limit, --from, --watch"
        )
    shown = SHOWN if limit is None else limit
    read: Callable[[], dict[str, Any]]
    if daemon is not None:
        read, source = partial(from_daemon, daemon, stuck_only, shown), url_without_secrets(daemon)
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
        note = truncated(document, stuck_only) if daemon is None else None
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
            try:
                text = screen(read(), header)
            except OperatorError as exc:
                text = f"{header}\n\nerror: {printable(str(exc))}"
            click.clear()
            click.echo(text)
            time.sleep(every)
    except KeyboardInterrupt:
        click.echo()
        return 0
