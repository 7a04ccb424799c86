"""What `lock-monitor locks` reads, and what its exit code says: one pass straight from
Redis, or the running daemon's /locks document.

One pass has never seen the locks before: a lock whose value holds no timestamp has no age it
can know, so it is shown as unknown, never as 0; the daemon has watched them. Only what is
printed is kept: the oldest locks and the counts, or with `--all` nothing at all, each lock
being written as it is read; so a million locks cost little more memory than a hundred.
"""

from __future__ import annotations

import base64
import json
import signal
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from lock_monitor.config import DaemonSettings, RedisSettings, ScanSettings
from lock_monitor.connection import connect
from lock_monitor.errors import OperatorError
from lock_monitor.locks import Lock
from lock_monitor.monitor import MonitorState
from lock_monitor.passes import PassFailed, PassResult, describe_error, read_pass
from lock_monitor.stuck_log import StuckMemory
from lock_monitor.tracker import LockTracker
from lock_monitor.views import ago, current_counts, lock_entry, printable, status_document

if TYPE_CHECKING:
    import urllib.request

EXIT_STUCK = 3
EXIT_UNKNOWN_AGES = 4  # no lock known to be stuck, but some ages one pass cannot know
FROM_TIMEOUT_SECONDS = 10.0
FROM_LIMIT_BYTES = 16 * 1024 * 1024  # a /locks document is small; a wrong URL may not be
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


def daemon_request(daemon: DaemonSettings) -> tuple[urllib.request.Request, ssl.SSLContext | None]:
    """The request for the daemon's /locks, with its credentials (never sent on to where a
    redirect points), and the TLS context that verifies the daemon (and shows our certificate)."""
    import urllib.request  # only --from speaks HTTP: `locks` from Redis starts without it

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
    import urllib.error  # only --from speaks HTTP: `locks` from Redis starts without it
    import urllib.request

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
