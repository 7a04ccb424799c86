"""A live set and its events, built by hand for the unit tests of the live set's modules."""

from __future__ import annotations

from collections.abc import Sequence

from lock_monitor.eventstream import Stream
from lock_monitor.liveset import LiveSet
from lock_monitor.passlocks import PassLock, PassLocks
from lock_monitor.reconcile import begin_pass, reconcile

PREFIX = b"__keyspace@0__:"
START = 1000.0  # this host's monotonic clock at the start of each test
REDIS_AT_START = 1_800_000_000.0  # Redis' clock at that moment


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def seed(live: LiveSet, *locks: PassLock) -> None:
    """Subscribed, and a first pass reconciled: the set is authoritative."""
    subscribe(live)
    reconcile(live, begin_pass(live), pass_locks(*locks))
    assert live.usable()


def pass_locks(*locks: PassLock) -> PassLocks:
    """`locks` as a pass hands them over (their keys bounded)."""
    held = PassLocks()
    held.extend(*columns(locks))
    return held


def columns(
    locks: Sequence[PassLock],
) -> tuple[list[bytes], list[float], list[bool], list[bool]]:
    """Locks as the columns `PassLocks.extend` takes."""
    return (
        [key for key, _, _, _ in locks],
        [taken for _, taken, _, _ in locks],
        [ttl for _, _, ttl, _ in locks],
        [stamped for _, _, _, stamped in locks],
    )


def subscribe(live: LiveSet) -> None:
    live.subscriptions_changed(True)
    live.set_verified(True)


def send(stream: Stream, *events: tuple[str, str]) -> None:
    stream.apply(
        [[b"pmessage", PREFIX + b"*", PREFIX + key.encode(), e.encode()] for key, e in events]
    )


def acquire(stream: Stream, key: str) -> None:
    """SET key value PX 30000 NX, as the backend takes a lock: `set` then `expire`."""
    send(stream, (key, "set"), (key, "expire"))
