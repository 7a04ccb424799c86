"""Reading one pass over several nodes: what a failure says (as data), what a failed pass
leaves behind, and how errors are worded.

Each node's reads are replaced at `read_pages`; against a real Redis (and a real Cluster
node) see tests/integration/test_passes.py.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from lock_monitor.config import ERROR_TEXT_LIMIT, RedisSettings, ScanSettings
from lock_monitor.passes import CLUSTER_HINT, PassFailed, describe_error, read_pass
from lock_monitor.scanner import Page
from lock_monitor.snapshot import OLDEST_SHOWN
from lock_monitor.stuck_log import StuckMemory
from lock_monitor.tracker import LockTracker
from lock_monitor.wire import ServerReading
from tests.unit.pages import NOW, RawLock, pages_of

SETTINGS = RedisSettings(url="redis://:s3cret-pw@seed:6379", mode="cluster")


class Node:
    """One node: its locks, or the error its first read raises."""

    def __init__(self, *locks: RawLock, error: Exception | None = None) -> None:
        self.locks, self.error = list(locks), error


class FakeTarget:
    def __init__(self, nodes: dict[str, Node], settings: RedisSettings = SETTINGS) -> None:
        self.settings, self.node_list = settings, nodes
        self.topology_error: Exception | None = None

    def nodes(self) -> list[tuple[str, Node]]:
        if self.topology_error is not None:
            raise self.topology_error
        return list(self.node_list.items())


def fake_read_pages(
    client: Node, pattern: str, count: int, cluster: bool, budget: object, recall: object
) -> Iterator[Page]:
    if client.error is not None:
        raise client.error
    yield from pages_of(client.locks)


@pytest.fixture(autouse=True)
def _nodes_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lock_monitor.passes.read_pages", fake_read_pages)
    monkeypatch.setattr(
        "lock_monitor.passes.server_reading", lambda client, budget: ServerReading("id", 0.0)
    )


def held(key: str, seconds_ago: float, now: float = NOW) -> RawLock:
    return RawLock(key.encode(), b"%d" % ((now - seconds_ago) * 1000), 30_000, "string", now)


def opaque(key: str, now: float) -> RawLock:
    """A lock whose value holds no time: its age counts from its first sighting."""
    return RawLock(key.encode(), b"token", 30_000, "string", now)


def run(target: Any, tracker: LockTracker | None = None, **kwargs: Any) -> Any:
    scan = ScanSettings(stuck_threshold=30)
    return read_pass(target, scan, tracker or LockTracker(30), StuckMemory(), **kwargs)


def test_a_pass_reads_every_node_into_one_snapshot() -> None:
    target = FakeTarget({"a:1": Node(held("lock:1", 60)), "b:2": Node(held("lock:2", 1))})
    result = run(target)
    assert (result.snapshot.active, result.snapshot.stuck, result.snapshot.keys_scanned) == (
        2,
        1,
        2,
    )
    assert result.nodes == (("a:1", True), ("b:2", True))
    assert [lock.key for *_, lock in result.stuck.new] == ["lock:1"]


def test_every_node_is_tried_and_each_failure_is_named() -> None:
    target = FakeTarget({
        "a:1": Node(error=redis.ConnectionError("Connection refused")),
        "b:2": Node(held("lock:2", 1)),
        "c:3": Node(error=redis.TimeoutError("Timeout reading from socket")),
    })  # fmt: skip
    with pytest.raises(PassFailed) as failed:
        run(target)
    assert failed.value.failures == {
        "a:1": "ConnectionError: Connection refused",
        "c:3": "TimeoutError: Timeout reading from socket",
    }
    assert failed.value.nodes == (("a:1", False), ("b:2", True), ("c:3", False))
    assert str(failed.value) == (
        "a:1: ConnectionError: Connection refused; c:3: TimeoutError: Timeout reading from socket"
    )


def test_an_unreadable_topology_fails_the_pass() -> None:
    target = FakeTarget({})
    target.topology_error = redis.ConnectionError("Error 111 connecting to seed:6379.")
    with pytest.raises(PassFailed) as failed:
        run(target)
    assert failed.value.failures == {
        "topology": "ConnectionError: Error 111 connecting to seed:6379."
    }


def test_a_failure_is_worded_for_someone_who_named_the_target() -> None:
    alone = PassFailed({"redis://r:6379/0": "ConnectionError: refused"})
    assert alone.reason("redis://r:6379/0") == "ConnectionError: refused"  # named once
    other = PassFailed({"10.0.0.2:6379": "ConnectionError: refused"})
    assert other.reason("redis://r:6379/0") == "10.0.0.2:6379: ConnectionError: refused"


def test_a_failed_pass_leaves_first_sightings_as_they_were() -> None:
    """A lock on the node that failed was not seen: it must not count as released."""
    tracker = LockTracker(30)
    run(FakeTarget({"a:1": Node(), "b:2": Node(opaque("lock:9", NOW))}), tracker)
    with pytest.raises(PassFailed):
        run(FakeTarget({"a:1": Node(), "b:2": Node(error=redis.ConnectionError("gone"))}), tracker)
    result = run(FakeTarget({"a:1": Node(), "b:2": Node(opaque("lock:9", NOW + 40))}), tracker)
    assert result.snapshot.oldest[0].age_seconds == 40
    assert result.snapshot.stuck == 1


def test_only_locks_not_stuck_before_are_new() -> None:
    tracker, scan = LockTracker(30), ScanSettings(stuck_threshold=30)
    first = read_pass(FakeTarget({"a:1": Node(held("lock:1", 60))}), scan, tracker, StuckMemory())
    target = FakeTarget({"a:1": Node(held("lock:1", 60), held("lock:2", 90))})
    result = read_pass(target, scan, tracker, first.stuck.remembered)
    assert (result.stuck.count, result.stuck.still) == (2, 1)
    assert [lock.key for *_, lock in result.stuck.new] == ["lock:2"]


def test_every_lock_can_be_handed_over_as_it_is_read() -> None:
    locks = [held(f"lock:{i}", i) for i in range(OLDEST_SHOWN + 5)]
    target = FakeTarget({"a:1": Node(*locks[:10]), "b:2": Node(*locks[10:])})
    handed: list[str] = []
    result = run(target, keep_oldest=3, each=lambda page: handed.extend(x.key for x in page))
    assert sorted(handed) == sorted(lock.key.decode() for lock in locks)
    assert [lock.key for lock in result.snapshot.oldest] == ["lock:24", "lock:23", "lock:22"]


def test_the_snapshot_keeps_the_oldest_few_unless_asked_for_all() -> None:
    locks = [held(f"lock:{i}", i) for i in range(OLDEST_SHOWN + 5)]
    target = FakeTarget({"a:1": Node(*locks)})
    assert len(run(target).snapshot.oldest) == OLDEST_SHOWN
    assert len(run(target, keep_oldest=None).snapshot.oldest) == OLDEST_SHOWN + 5


def test_errors_are_one_line_without_secrets() -> None:
    settings = RedisSettings(
        url="redis://:url-pw@r:6379", password="s3cret-pw", sentinel_password="sent-pw"
    )
    error = redis.AuthenticationError("refused s3cret-pw (url-pw, sent-pw)\nsecond line")
    assert describe_error(error, settings) == "AuthenticationError: refused *** (***, ***)"


def test_a_refused_certificate_says_what_to_fix() -> None:
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cause.verify_message = "self-signed certificate"
    error = redis.ConnectionError("Error connecting")
    error.__cause__ = cause
    assert "check --redis-ca-file" in describe_error(error, SETTINGS)


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ClusterCrossSlotError("Keys in request don't hash to the same slot"),
        redis.exceptions.MovedError("3999 127.0.0.1:6381"),
        redis.exceptions.ClusterDownError("The cluster is down"),
    ],
)
def test_cluster_replies_in_standalone_mode_hint_at_the_cluster_mode(error: Exception) -> None:
    standalone = RedisSettings(url="redis://r:6379/0")
    assert describe_error(error, standalone).endswith(f"; {CLUSTER_HINT}")
    assert CLUSTER_HINT not in describe_error(error, SETTINGS)  # already in cluster mode
    assert CLUSTER_HINT not in describe_error(redis.ResponseError("WRONGTYPE"), standalone)


def test_a_huge_error_text_is_cut_and_the_hint_still_shows() -> None:
    standalone = RedisSettings(url="redis://:s3cret-pw@r:6379/0")
    error = redis.exceptions.ClusterDownError("CLUSTERDOWN " + "x" * 1_000_000 + " s3cret-pw")
    text = describe_error(error, standalone)
    assert text.startswith("ClusterDownError: CLUSTERDOWN xxx")
    assert text.endswith(f"xxx…; {CLUSTER_HINT}")
    assert len(text) == ERROR_TEXT_LIMIT + len(f"…; {CLUSTER_HINT}")
    cut_secret = redis.AuthenticationError("x" * (ERROR_TEXT_LIMIT - 25) + "s3cret-pw")
    assert "s3cret" not in describe_error(cut_secret, standalone)  # scrubbed before it is cut


@pytest.mark.parametrize(
    ("readings", "busiest"),
    [
        ({"a:1": [1.0, 1.5], "b:2": [7.0, 7.25]}, 0.5),  # the busiest node, not the sum
        ({"a:1": [1.0, 1.5], "b:2": [None, None]}, None),  # one node refuses INFO: unknown
        ({"a:1": [9.0, 0.5], "b:2": [2.0, 2.0]}, 0.0),  # counters reset meanwhile
    ],
)
def test_redis_time_is_that_of_the_busiest_node(
    monkeypatch: pytest.MonkeyPatch, readings: dict[str, list[float | None]], busiest: float
) -> None:
    nodes = {name: Node(held(f"lock:{name}", 1)) for name in readings}
    by_node = {id(node): iter(readings[name]) for name, node in nodes.items()}
    monkeypatch.setattr(
        "lock_monitor.passes.server_reading",
        lambda client, budget: ServerReading("id", next(by_node[id(client)])),
    )
    assert run(FakeTarget(nodes)).redis_seconds == busiest
