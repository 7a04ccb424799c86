"""One node's keyspace events: whether the node publishes them, and a subscriber that reads them.

Redis publishes an event on `__keyspace@<db>__:<key>` for every change of a key when its
`notify-keyspace-events` setting asks for it; lock-monitor only reads that setting (CONFIG
GET, where the ACL allows), never changes it.

Each subscriber reads on its own connection in its own thread and applies what it reads
straight to the live set, in batches: nothing queues up in this process, so a burst costs
socket buffer (Redis' output buffer for the client), never memory here.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import redis
from redis.exceptions import NoPermissionError

from lock_monitor.config import RedisSettings
from lock_monitor.connection import Target
from lock_monitor.eventstream import Stream
from lock_monitor.liveset import LiveSet

# K: keyspace channels; g: del, expire, persist, rename; $: set; x: expired; e: evicted.
NEEDED_CLASSES = "Kg$xe"
RECOMMENDED_SETTING = "Kg$xeh"  # h: hash locks (Redisson) too
_A_STANDS_FOR = "g$lshzxetd"

READ_WAIT = 0.05  # a subscriber's wait for the next message: how late a reconcile may start
PING_AFTER = 10.0  # idle seconds before asking the server whether the connection still works
RECHECK_EVERY = 60.0  # while the server does not publish events, or the ACL refuses them
BATCH = 1000  # replies applied per hold of the live set's lock
BACKOFF_FIRST, BACKOFF_CAP = 0.2, 30.0

SubscriberState = Literal["connecting", "up", "down", "unavailable", "refused"]


def missing_classes(flags: str) -> str:
    """The event classes of NEEDED_CLASSES that a `notify-keyspace-events` value lacks."""
    have = set(flags)
    if "A" in have:
        have.update(_A_STANDS_FOR)
    return "".join(c for c in NEEDED_CLASSES if c not in have)


def channel_prefix(db: int) -> bytes:
    return b"__keyspace@%d__:" % db


def backoff(failures: int) -> float:
    """Capped exponential backoff with jitter, so that many monitors do not retry in step."""
    ceiling = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** min(failures - 1, 16))
    return random.uniform(ceiling / 2, ceiling)


class NotPublished(Exception):
    """The node's `notify-keyspace-events` lacks classes the lock events need."""


def _config_flags(client: redis.Redis) -> str | None:
    """The node's notify-keyspace-events, or None where the ACL (or a managed Redis) hides it."""
    try:
        reply: dict[Any, Any] = client.config_get("notify-keyspace-events")
    except redis.ResponseError:
        return None
    value = next(iter(reply.values()), "")
    return value.decode() if isinstance(value, bytes) else str(value)


def _not_published_reason(node: str, flags: str) -> str:
    return (
        f"notify-keyspace-events is {flags!r} on {node}: lock events need "
        f"{', '.join(missing_classes(flags))} (set {RECOMMENDED_SETTING!r} or a superset)"
    )


def startup_problem(
    settings: RedisSettings, connector: Callable[[RedisSettings], Target]
) -> str | None:
    """For `--events on`: why the server will not publish lock events, when that can be told
    now (Redis reachable, CONFIG GET allowed); None otherwise."""
    target: Target | None = None
    try:
        target = connector(settings)
        for name, client in target.nodes():
            flags = _config_flags(client)
            if flags is not None and missing_classes(flags):
                return _not_published_reason(name, flags)
    except redis.RedisError:
        return None  # cannot tell now: the monitor starts and keeps trying
    finally:
        if target is not None:
            target.close()
    return None


class Subscriber:
    """One node's keyspace events, read in a thread of its own and applied to the live set."""

    def __init__(
        self,
        name: str,
        client: redis.Redis,
        pattern: str,
        live: LiveSet,
        changed: Callable[[Subscriber], None],
        timeout: float,
    ) -> None:
        self.name = name
        self.client = client
        db = int(client.connection_pool.connection_kwargs.get("db") or 0)
        self.prefix = channel_prefix(db)
        self.channel = self.prefix + pattern.encode()
        self.live = live
        self.timeout = timeout
        self._changed = changed
        self.state: SubscriberState = "connecting"
        self.reason: str | None = None
        self.verified = False  # the server is known to publish: by its setting, or by an event
        self.sessions = 0  # successful subscriptions so far
        self.drained_at = -math.inf  # monotonic time when it last found nothing left to read
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"events {name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _set(self, state: SubscriberState, reason: str | None = None) -> None:
        self.state, self.reason = state, reason
        self._changed(self)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            pubsub = None
            wait = RECHECK_EVERY
            try:
                self._check_setting()
                pubsub = self.client.pubsub()  # type: ignore[no-untyped-call]
                pubsub.psubscribe(self.channel)
                self._confirm(pubsub)
                self.sessions += 1
                failures = 0
                self._set("up")
                self._read(pubsub)
            except NoPermissionError as exc:
                self._set("refused", str(exc))
            except NotPublished as exc:
                self._set("unavailable", str(exc))
            except Exception as exc:  # lost connection, restart, timeout, failover
                failures += 1
                wait = backoff(failures)
                self._set("down", f"{type(exc).__name__}: {exc}")
            finally:
                if pubsub is not None:
                    _close(pubsub)
            self._stop.wait(wait)

    def _check_setting(self) -> None:
        flags = _config_flags(self.client)
        if flags is not None and missing_classes(flags):
            raise NotPublished(_not_published_reason(self.name, flags))
        self.verified = self.verified or flags is not None  # else: once an event arrives

    def _confirm(self, pubsub: redis.client.PubSub) -> None:
        """Wait for Redis to confirm the PSUBSCRIBE; an ACL refusal raises NoPermissionError."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            reply = _next_reply(pubsub, READ_WAIT)
            if reply is not None and reply[0] == b"psubscribe":
                return
        raise TimeoutError(f"no answer to PSUBSCRIBE within {self.timeout:g}s")

    def _read(self, pubsub: redis.client.PubSub) -> None:
        connection: Any = pubsub.connection
        reader = hiredis_reader(connection)
        stream = Stream(self.live, self.prefix)
        last_data = time.monotonic()
        pinged: float | None = None
        while not self._stop.is_set():
            if connection.can_read(0):
                first = _next_reply(pubsub, 0)
            else:
                self.drained_at = time.monotonic()
                first = _next_reply(pubsub, READ_WAIT)
            now = time.monotonic()
            if first is None:
                if pinged is not None and now - pinged > self.timeout:
                    raise ConnectionError(f"no answer to PING within {self.timeout:g}s")
                if pinged is None and now - last_data > PING_AFTER:
                    pubsub.ping()
                    pinged = now
                continue
            last_data, pinged = now, None
            stream.apply(_batch(first, reader))
            if not self.verified and stream.received:
                self.verified = True
                self._changed(self)


def hiredis_reader(connection: Any) -> Any:
    """hiredis' reader of a connected redis-py connection, or None (no hiredis).

    hiredis parses the replies of a whole socket read at once; the ones already parsed are
    taken from it without a Python-level round for each. redis-py has no public way to it:
    a test checks that this finds it with the pinned versions (else it is silently slower).
    """
    return getattr(getattr(connection, "_parser", None), "_reader", None)


def _next_reply(pubsub: Any, wait: float) -> Any:
    """The next reply within `wait` seconds, or None (redis-py's own health-check PONGs too)."""
    return pubsub.parse_response(block=False, timeout=wait)


def _batch(first: Any, reader: Any) -> Sequence[Any]:
    """`first` and the replies hiredis has already parsed, up to BATCH."""
    batch = [first]
    if reader is None:
        return batch
    while len(batch) < BATCH:
        reply = reader.gets()
        if not isinstance(reply, list):
            if isinstance(reply, Exception):
                raise reply
            break  # nothing complete left in the buffer
        batch.append(reply)
    return batch


def _close(pubsub: redis.client.PubSub) -> None:
    with contextlib.suppress(Exception):  # a broken connection may fail to close; it is gone
        pubsub.reset()
