"""Redis' CRC-64, the RDB check, Cluster series, and the replica side of SYNC.

A real redis-server always sends sound RDBs, so truncation, corruption and refusals are played
by a small TCP server that answers redis-py's handshake with +OK and SYNC with given bytes.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from lock_monitor.backup.files import BackupError, prune
from lock_monitor.backup.redis_rdb import (
    CLUSTER_NAME,
    RdbCheck,
    backup_redis,
    crc64,
    format_slot_ranges,
    primary_slots,
    raw_socket,
    series_name,
    slot_ranges,
)
from lock_monitor.config import RedisSettings
from lock_monitor.connection import connect

NOW = datetime(2026, 3, 20, 2, 30, tzinfo=UTC)


def rdb(body: bytes = b"\xfe\x00\xfb\x01\x00\x00\x01k\x01v", checksum: int | None = None) -> bytes:
    """A minimal RDB: header, a body, the EOF opcode and the CRC-64 of all of it."""
    data = b"REDIS0011" + body + b"\xff"
    crc = crc64(data) if checksum is None else checksum
    return data + crc.to_bytes(8, "little")


def check(data: bytes, chunk: int) -> RdbCheck:
    checker = RdbCheck()
    for start in range(0, len(data), chunk):
        checker.update(data[start : start + chunk])
    checker.verify()
    return checker


def test_crc64_is_redis_jones_variant() -> None:
    assert crc64(b"123456789") == 0xE9C6D914C4B8D9CA
    assert crc64(b"456789", crc64(b"123")) == 0xE9C6D914C4B8D9CA


@pytest.mark.parametrize("chunk", [1, 3, 8, 9, 1000])
def test_rdb_check_accepts_a_sound_file_however_it_is_split(chunk: int) -> None:
    data = rdb()
    checker = check(data, chunk)
    assert checker.header == b"REDIS0011"
    assert checker.before_trailer == 0xFF  # the EOF opcode, just before the trailer
    assert checker.crc == crc64(data[:-8])  # everything but the trailer, chunking aside
    assert checker.trailer == data[-8:]


def test_rdb_check_accepts_a_stream_of_uneven_chunks() -> None:
    """Large chunks, a few bytes, empty reads, in any order: the same sums as the whole file."""
    data = rdb(bytes(range(256)) * 16)
    sizes = [0, 3, 1000, 8, 1, 0, 9, 2000, 5, 7]
    sizes += [len(data) - sum(sizes) - 6, 2, 4, 0]  # the trailer split in two
    checker, start = RdbCheck(), 0
    for size in sizes:
        checker.update(data[start : start + size])
        start += size
    assert start == len(data)
    checker.verify()
    assert (checker.crc, checker.trailer) == (crc64(data[:-8]), data[-8:])


def test_rdb_check_accepts_zero_checksum_of_rdbchecksum_no() -> None:
    data = rdb(checksum=0)
    checker = check(data, 4)
    assert checker.trailer == bytes(8)
    assert checker.crc == crc64(data[:-8]) != 0  # computed all the same, then not compared


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"RDB" + rdb()[3:], "does not start with REDIS"),
        (rdb()[:-1], "truncated"),
        (rdb()[:-9], "truncated"),
        (rdb()[:12] + b"\x00" + rdb()[13:], "checksum"),
        (rdb(checksum=1), "checksum"),
        (b"", "does not start with REDIS"),
    ],
)
def test_rdb_check_refuses_damaged_files(data: bytes, message: str) -> None:
    with pytest.raises(BackupError, match=message):
        check(data, 5)


MARK = b"0123456789abcdef0123456789abcdef01234567"


def sound_rdb(size: int = 300_000) -> bytes:
    data = b"REDIS0011" + b"\xfe\x00" + bytes(range(256)) * (size // 256) + b"\xff"
    return data + crc64(data).to_bytes(8, "little")


class ScriptedMaster:
    """Answers redis-py's handshake and REPLCONF until SYNC, then sends `reply` and closes."""

    ANSWERS: ClassVar[dict[bytes, bytes]] = {
        b"HELLO": b"%1\r\n$5\r\nproto\r\n:3\r\n",
        b"PING": b"+PONG\r\n",
    }

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.commands: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            buffer = b""
            while b"SYNC" not in self.commands:
                data = conn.recv(4096)
                if not data:
                    return
                buffer += data
                while (command := self._next_command(buffer)) is not None:
                    name, buffer = command
                    self.commands.append(name)
                    if name != b"SYNC":
                        conn.sendall(self.ANSWERS.get(name, b"+OK\r\n"))
            conn.sendall(b"\n\n" + self.reply)  # the newlines Redis sends while it forks

    @staticmethod
    def _next_command(buffer: bytes) -> tuple[bytes, bytes] | None:
        """The first word of a complete RESP array at the start of `buffer`, and the rest."""
        lines = buffer.split(b"\r\n")
        if not lines[0].startswith(b"*") or len(lines) < 2 * int(lines[0][1:]) + 2:
            return None
        count = int(lines[0][1:])
        return lines[2].upper(), b"\r\n".join(lines[1 + 2 * count :])

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def master() -> Iterator[type[ScriptedMaster]]:
    started: list[ScriptedMaster] = []

    def start(reply: bytes) -> ScriptedMaster:
        started.append(ScriptedMaster(reply))
        return started[-1]

    yield start  # type: ignore[misc]
    for server in started:
        server.close()


def take_backup(port: int, dest: Path) -> Path:
    target = connect(RedisSettings(url=f"redis://127.0.0.1:{port}/0", timeout=5))
    try:
        (result,) = list(backup_redis(target, dest, keep_days=7))
    finally:
        target.close()
    return result.file


@pytest.mark.parametrize("diskless", [False, True])
def test_both_payload_formats_give_the_exact_rdb(master, tmp_path: Path, diskless: bool) -> None:
    data = sound_rdb()
    reply = b"$EOF:" + MARK + b"\r\n" + data + MARK if diskless else b"$%d\r\n" % len(data) + data
    server = master(reply)
    file = take_backup(server.port, tmp_path)
    assert file.read_bytes() == data
    assert server.commands[-3:] == [b"REPLCONF", b"REPLCONF", b"SYNC"]
    assert list(tmp_path.iterdir()) == [file]


def test_raw_socket_is_the_socket_of_a_connected_redis_py_connection(master) -> None:
    """backup redis reads redis-py's private Connection._sock: this fails if redis-py changes it."""
    server = master(b"")
    connection = redis.Connection(host="127.0.0.1", port=server.port, socket_timeout=5)
    connection.connect()
    try:
        sock = raw_socket(connection)
        assert isinstance(sock, socket.socket)
        assert sock.getpeername() == ("127.0.0.1", server.port)
    finally:
        connection.disconnect()  # type: ignore[no-untyped-call]


def test_raw_socket_names_redis_py_when_there_is_no_socket() -> None:
    with pytest.raises(BackupError, match=r"^redis-py \S+ keeps no socket in Connection\._sock"):
        raw_socket(redis.Connection())  # never connected


BAD_PAYLOADS = {
    "truncated": (b"$%d\r\n" % len(sound_rdb()) + sound_rdb()[:-1000], "closed the connection"),
    "truncated diskless": (b"$EOF:" + MARK + b"\r\n" + sound_rdb()[:5000], "closed the connection"),
    "corrupt": (
        b"$%d\r\n" % len(sound_rdb()) + sound_rdb()[:100] + b"X" + sound_rdb()[101:],
        "corrupt: checksum",
    ),
    "not an RDB": (b"$12\r\nhello world!", "does not start with REDIS"),
    "refused": (b"-NOPERM this user has no permissions to run the 'sync' command\r\n", "NOPERM"),
    "garbage": (b"+FULLRESYNC abc 0\r\n", "unexpected reply to SYNC"),
}


@pytest.mark.parametrize("case", BAD_PAYLOADS)
def test_a_bad_payload_is_an_error_and_leaves_no_file(master, tmp_path: Path, case: str) -> None:
    reply, message = BAD_PAYLOADS[case]
    server = master(reply)
    with pytest.raises(BackupError, match=message) as caught:
        take_backup(server.port, tmp_path)
    assert str(caught.value).startswith(f"backup of redis://127.0.0.1:{server.port}/0 failed: ")
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


# --- Redis Cluster: one series per primary, named by its slots ---------------------------


def cluster_client(slots: dict[int, list[str]]) -> RedisCluster:
    """Stands in for a RedisCluster: only its slot table (slot -> [primary, replicas...])."""
    table = {
        slot: [ClusterNode(*name.split(":")) for name in names] for slot, names in slots.items()
    }
    return SimpleNamespace(nodes_manager=SimpleNamespace(slots_cache=table))  # type: ignore[return-value]


def test_slot_ranges_are_sorted_runs() -> None:
    assert slot_ranges([7, 2, 0, 1, 9, 8]) == [(0, 2), (7, 9)]
    assert slot_ranges([5]) == [(5, 5)]


def test_series_follow_the_slots_not_the_address() -> None:
    layout = {slot: ["10.0.0.1:6379", "10.0.0.4:6379"] for slot in range(0, 5461)}
    layout |= {slot: ["10.0.0.2:6379"] for slot in range(5461, 10923)}
    layout |= {slot: ["10.0.0.3:6379"] for slot in (*range(10923, 12000), *range(14000, 16384))}
    before = primary_slots(cluster_client(layout))
    assert {name: series_name(r) for name, r in before.items()} == {
        "10.0.0.1:6379": "slots-0-5460",
        "10.0.0.2:6379": "slots-5461-10922",
        "10.0.0.3:6379": "slots-10923-11999",
    }
    assert format_slot_ranges(before["10.0.0.3:6379"]) == "10923-11999,14000-16383"

    # 10.0.0.1 fails; its replica is promoted (and the pod comes back with a new IP as replica).
    layout |= {slot: ["10.0.0.4:6379", "10.0.0.9:6379"] for slot in range(0, 5461)}
    after = primary_slots(cluster_client(layout))
    assert series_name(after["10.0.0.4:6379"]) == series_name(before["10.0.0.1:6379"])
    assert "10.0.0.1:6379" not in after


def test_cluster_retention_ages_out_vanished_series_and_keeps_each_current_newest(
    tmp_path: Path,
) -> None:
    names = {
        "redis-backup-20260320T020000Z-slots-0-5460.rdb": False,  # this run's
        "redis-backup-20260319T020000Z-slots-0-5460.rdb": False,  # within 7 days
        "redis-backup-20260301T020000Z-slots-0-5460.rdb": True,  # old, not its newest
        "redis-backup-20260301T020000Z-slots-5461-10922.rdb": False,  # old, newest of a current
        "redis-backup-20260228T020000Z-slots-5461-10922.rdb": True,
        "redis-backup-20260310T020000Z-slots-10923-16383.rdb": True,  # a series resharded away
        "redis-backup-20260315T020000Z-slots-10923-16383.rdb": False,  # ... within 7 days
        "redis-backup-20260301T020000Z-10.0.0.3_6379.rdb": True,  # the earlier host_port naming
        "redis-backup-20260301T020000Z-redis_cluster_0.svc_6379.rdb": True,
        "redis-backup-20200101T000000Z.rdb": False,  # standalone naming: not this pattern
        "redis-backup-20200101T000000Z-manual.rdb": False,  # not this tool's naming
        "redis-backup-20200101T000000Z-slots-1.rdb": False,
    }
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    current = {"slots-0-5460", "slots-5461-10922"}

    deleted = prune(tmp_path, CLUSTER_NAME, 7, NOW, current)

    assert sorted(deleted) == sorted(name for name, old in names.items() if old)
    assert {p.name for p in tmp_path.iterdir()} == {n for n, old in names.items() if not old}


def test_cluster_retention_never_deletes_the_newest_file_overall(tmp_path: Path) -> None:
    """Backups failing for weeks after a resharding: the last good file stays."""
    for name in (
        "redis-backup-20250101T000000Z-slots-0-16383.rdb",
        "redis-backup-20250102T000000Z-slots-0-8191.rdb",
    ):
        (tmp_path / name).write_bytes(b"x")
    assert prune(tmp_path, CLUSTER_NAME, 7, NOW, {"slots-8192-16383"}) == [
        "redis-backup-20250101T000000Z-slots-0-16383.rdb"
    ]
