"""The supervisor's pure parts: how the subscribers' states add up (and what is logged), and
stopping. The subscribers against a real server are in tests/integration/test_events.py."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import structlog
from structlog.testing import capture_logs

from lock_monitor.config import ERROR_TEXT_LIMIT, RedisSettings
from lock_monitor.events import Events
from lock_monitor.liveset import LiveSet

SETTINGS = RedisSettings(url="redis://redis:6379/0")


@dataclass
class Stub:
    """What the supervisor reads of a subscriber."""

    name: str
    state: str = "connecting"
    verified: bool = False
    sessions: int = 0
    reason: str | None = None
    channel: bytes = b"__keyspace@0__:lock:*"

    def up(self, verified: bool = True) -> Stub:
        self.state, self.verified, self.sessions = "up", verified, self.sessions + 1
        return self


def supervisor(mode: str = "auto") -> tuple[Events, LiveSet]:
    live = LiveSet(stuck_threshold=30)
    events = Events(SETTINGS, "lock:*", mode, live, structlog.get_logger())  # type: ignore[arg-type]
    return events, live


def update(events: Events, *subscribers: Stub) -> None:
    events._subscribers = {stub.name: stub for stub in subscribers}  # type: ignore[misc]
    events._update_state()


def test_live_only_when_every_node_is_subscribed_and_publishes() -> None:
    events, live = supervisor()
    one, two = Stub("a:1").up(), Stub("b:1")
    subscribed: list[bool] = []
    events.pass_wanted = lambda: subscribed.append(True)
    with capture_logs() as logs:
        update(events, one, two)
        assert events.status().state == "starting"
        assert not live.subscribed
        update(events, one, two.up())
        assert events.status().up
        assert (live.subscribed, live.verified) == (True, True)
        assert subscribed == [True]  # a pass is asked for, to reconcile at once
        update(events, one, two)  # nothing changed: nothing logged, no epoch lost
    assert [entry["event"] for entry in logs] == ["events_live"]
    assert events.status().reconnects == 0


def test_a_drop_is_logged_once_and_counted_as_a_reconnect_when_back() -> None:
    events, live = supervisor()
    node = Stub("a:1").up()
    update(events, node)
    epoch = live.epoch
    with capture_logs() as logs:
        node.state, node.reason = "down", "ConnectionError: closed"
        update(events, node)
        update(events, node)
        status = events.status()
        assert (status.state, status.reason, status.up) == (
            "down",
            "ConnectionError: closed",
            False,
        )
        assert live.verified  # the server still publishes; events are only away
        update(events, node.up())
    assert [entry["event"] for entry in logs] == ["events_down", "events_live"]
    assert events.status().reconnects == 1
    assert live.epoch == epoch + 2  # down, then up again: events were lost in between


def test_refused_and_unavailable_name_the_fix() -> None:
    events, _ = supervisor()
    with capture_logs() as logs:
        update(events, Stub("a:1", state="refused", reason="NOPERM no channel"))
    assert events.status().state == "refused"
    assert "&__keyspace@0__:lock:*" in logs[0]["hint"]
    assert "+psubscribe" in logs[0]["hint"]

    events, _ = supervisor("on")
    with capture_logs() as logs:
        update(events, Stub("a:1", state="unavailable", reason="notify-keyspace-events is ''"))
    assert (logs[0]["event"], logs[0]["log_level"]) == ("events_unavailable", "error")


def test_a_servers_error_text_is_one_bounded_line_without_secrets() -> None:
    live = LiveSet(stuck_threshold=30)
    settings = RedisSettings(url="redis://redis:6379/0", password="s3cret-pw")
    events = Events(settings, "lock:*", "auto", live, structlog.get_logger())
    hostile = "NOPERM s3cret-pw " + "x" * 1000 + "\nsecond line"
    with capture_logs() as logs:
        update(events, Stub("a:1", state="refused", reason=hostile))
    reason = events.status().reason
    assert reason == ("NOPERM *** " + "x" * 1000)[:ERROR_TEXT_LIMIT] + "…"
    assert logs[0]["error"] == reason


def test_unverified_until_an_event_or_proof_that_none_come() -> None:
    """CONFIG GET refused: subscribed, but trusted only once an event has arrived."""
    events, live = supervisor()
    node = Stub("a:1").up(verified=False)
    update(events, node)
    assert events.status().state == "unverified"
    assert not live.verified
    events._reconciled(corrections=0, comparable=True)
    assert events.status().state == "unverified"
    events._reconciled(corrections=2, comparable=False)  # after a gap: no proof
    assert events.status().state == "unverified"
    with capture_logs() as logs:
        events._reconciled(corrections=2, comparable=True)
    assert events.status().state == "unavailable"
    assert "no keyspace event arrived" in str(logs[0]["reason"])
    node.verified = True  # an event came after all
    events._changed(node)  # type: ignore[arg-type]
    assert events.status().state == "live"


def test_a_lost_subscription_asks_for_a_pass_at_once() -> None:
    """The gauges fall back on passes: the next one must come now, not an interval later,
    so that a Redis that went away shows as down (and its locks as unknown) at once."""
    events, _ = supervisor()
    wanted: list[str] = []
    events.pass_wanted = lambda: wanted.append(events.status().state)
    one, two = Stub("a:1").up(), Stub("b:1").up()
    update(events, one, two)
    assert len(wanted) == 1  # every node subscribed
    one.state, one.reason = "down", "ConnectionError: Connection refused"
    update(events, one, two)
    assert len(wanted) == 2
    update(events, one, two)  # still down, retrying: no pass for each attempt
    assert len(wanted) == 2


def test_reconnects_are_counted_before_the_server_is_known_to_publish() -> None:
    """CONFIG GET refused and no event yet ("unverified"): a lost subscription made again is
    a reconnect all the same."""
    events, _ = supervisor()
    node = Stub("a:1").up(verified=False)
    update(events, node)
    node.state = "down"
    update(events, node)
    update(events, node.up(verified=False))
    assert events.status().state == "unverified"
    assert events.status().reconnects == 1


class Blocking:
    """A topology whose nodes() blocks until released; notes when it is closed."""

    keeps_topology = False

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.closed_while_busy: bool | None = None
        self.busy = False

    def nodes(self) -> list[Any]:
        self.busy = True
        self.entered.set()
        self.release.wait(5)
        self.busy = False
        return []

    def close(self) -> None:
        self.closed_while_busy = self.busy


def test_stop_leaves_the_connections_to_the_supervisor_until_it_has_finished() -> None:
    topology = Blocking()
    live = LiveSet(stuck_threshold=30)
    events = Events(SETTINGS, "lock:*", "auto", live, structlog.get_logger(), lambda s: topology)  # type: ignore[arg-type, return-value]
    events.start()
    assert topology.entered.wait(5)
    events.stop(timeout=0.05)  # the supervisor is still reading the topology
    assert topology.closed_while_busy is None
    topology.release.set()
    events._thread.join(5)
    assert topology.closed_while_busy is False  # closed once, after it was done with it
