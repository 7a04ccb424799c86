"""The web app the HTTP tests serve: a monitor state with one lock, a registry over it."""

from lock_monitor.events import EventsView
from lock_monitor.metrics import build_registry
from lock_monitor.monitor import MonitorState
from lock_monitor.snapshot import Snapshot
from lock_monitor.web import App
from tests.unit.documents import EVIL, NOW


def snapshot(seconds_ago: float) -> Snapshot:
    return Snapshot(NOW - seconds_ago, 0.1, 1, 1, 1, 1, (EVIL,))


def make_app(state: MonitorState, alive: bool = True, events: EventsView | None = None) -> App:
    view = None if events is None else lambda shown=(): events
    return App(
        lambda: state,
        lambda: alive,
        build_registry(lambda: state, "standalone", view),
        "redis://redis:6379/0",
        "standalone",
        interval=5,
        events=view,
    )


UP = MonitorState(redis_up=True, snapshot=snapshot(1))
