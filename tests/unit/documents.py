"""Snapshots and the documents made of them, for the tests of the views and the page."""

from typing import Any

from lock_monitor.locks import Lock
from lock_monitor.monitor import MonitorState
from lock_monitor.snapshot import Snapshot
from lock_monitor.views import status_document

NOW = 1_800_000_000.0
TARGET = "redis://redis:6379/0"
EVIL = Lock("lock:appointment:<script>", "<b>x</b>", "string", None, 40.0, "value", True)
FRESH = Lock("lock:appointment:7", "1799999999000:api-7", "string", 29.0, 1.0, "value", False)
SNAPSHOT = Snapshot(NOW - 2, 0.25, 5, 2, 1, 1, (EVIL, FRESH))
NODES = (("redis:6379", True),)
TOKEN = Lock("lock:appointment:9", "f3a9c0d2", "string", 12.0, 3.0, "first_seen", False)
HASH = Lock("lock:report", "<hash>", "hash", 20.0, 50.0, "first_seen", True)


def document_of(state: MonitorState, mode: str = "standalone", target: str = TARGET) -> Any:
    return status_document(state, target, mode, NOW, stuck_threshold=30)
