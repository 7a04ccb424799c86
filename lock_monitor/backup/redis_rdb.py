"""Redis backups: fetch the RDB over the network as a replica does, check it, keep it.

`SYNC` makes Redis fork and stream a point-in-time RDB of its dataset to us, exactly as for a
new replica (and as `redis-cli --rdb` does): no SAVE, nothing written on Redis' disk when
diskless sync is on (the Redis 7 default), and Redis keeps serving while the child writes.
The connection is redis-py's own, so AUTH, ACL users and TLS behave as for `run`.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster

from lock_monitor.backup.files import (
    CHUNK,
    STAMP,
    BackupError,
    Output,
    Written,
    atomic_file,
    prune,
    utc_stamp,
)
from lock_monitor.connection import Target

RDB_HEADER = re.compile(rb"REDIS\d{4}")
RDB_EOF = 0xFF
EOF_MARK_SIZE = 40  # diskless sync ends the payload with this many random bytes, announced first

# Redis' CRC-64 (Jones polynomial, reflected, init 0): the checksum an RDB file ends with.
_CRC64_POLY = 0x95AC9329AC4BC9B5


def _crc64_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC64_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC64_TABLE = _crc64_table()


def crc64(data: bytes, crc: int = 0) -> int:
    """Continue `crc` over `data` (pass the previous result to checksum a stream in chunks)."""
    table = _CRC64_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


class RdbCheck:
    """Checks an RDB as it streams past: `REDIS<4 digits>` header, EOF opcode, CRC-64 trailer."""

    def __init__(self) -> None:
        self.head = b""
        self.tail = b""  # the last 8 bytes seen: the checksum, once the stream is complete
        self.last = -1  # the byte before them: the EOF opcode
        self.crc = 0

    def update(self, chunk: bytes) -> None:
        if len(self.head) < 9:
            self.head += chunk[: 9 - len(self.head)]
        data = self.tail + chunk
        if len(data) > 8:
            self.crc = crc64(data[:-8], self.crc)
            self.last = data[-9]
        self.tail = data[-8:]

    def verify(self) -> None:
        if not RDB_HEADER.fullmatch(self.head):
            raise BackupError("not an RDB file: it does not start with REDIS<version>")
        if self.last != RDB_EOF or len(self.tail) < 8:
            raise BackupError("the RDB file is truncated: it does not end with the EOF opcode")
        stored = int.from_bytes(self.tail, "little")
        if stored not in (0, self.crc):  # 0: Redis runs with rdbchecksum no
            raise BackupError(
                f"the RDB file is corrupt: checksum {stored:016x}, computed {self.crc:016x}"
            )


class _Replication:
    """The raw byte stream of a replication connection after SYNC."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.received = 0

    def _recv(self) -> bytes:
        try:
            data = self.sock.recv(CHUNK)
        except TimeoutError:
            raise BackupError("Redis stopped sending the RDB (timed out)") from None
        except OSError as exc:
            raise BackupError(f"reading the RDB failed: {exc.strerror or exc}") from None
        if not data:
            raise BackupError(f"Redis closed the connection after {self.received} bytes of the RDB")
        self.received += len(data)
        return data

    def header(self) -> bytes:
        """The reply line to SYNC, after the newlines Redis sends to keep us waiting."""
        while True:
            self.buffer = self.buffer.lstrip(b"\n")
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
                self.received = len(self.buffer)
                return line
            if len(self.buffer) > 1024:
                raise BackupError("Redis did not answer SYNC with an RDB payload")
            self.buffer += self._recv()

    def exactly(self, size: int) -> Iterator[bytes]:
        """Disk-based sync: `$<size>` then exactly that many bytes."""
        left = size
        while left > 0:
            chunk = self.buffer or self._recv()
            self.buffer = chunk[left:]
            chunk = chunk[:left]
            left -= len(chunk)
            yield chunk

    def until(self, mark: bytes) -> Iterator[bytes]:
        """Diskless sync: bytes until the stream ends with the announced 40-byte mark."""
        pending = self.buffer
        self.buffer = b""
        while not pending.endswith(mark):
            yield pending[:-EOF_MARK_SIZE]
            pending = pending[-EOF_MARK_SIZE:] + self._recv()
        yield pending[:-EOF_MARK_SIZE]


def _payload(connection: Any) -> Iterator[bytes]:
    """Ask for an RDB as a replica would and yield it in chunks (either transfer format)."""
    # capa eof: we understand diskless payloads; rdb-only (Redis 7+): we want no command stream.
    for args, optional in (
        (("REPLCONF", "capa", "eof"), False),
        (("REPLCONF", "rdb-only", "1"), True),
    ):
        connection.send_command(*args)
        try:
            connection.read_response()
        except redis.ResponseError:
            if not optional:
                raise
    connection.send_command("SYNC")
    stream = _Replication(connection._sock)
    line = stream.header()
    if line.startswith(b"-"):
        raise BackupError(f"Redis refused SYNC: {line[1:].decode(errors='replace')}")
    if line.startswith(b"$EOF:") and len(line) == 5 + EOF_MARK_SIZE:
        yield from stream.until(line[5:])
    elif line.startswith(b"$") and line[1:].isdigit():
        yield from stream.exactly(int(line[1:]))
    else:
        raise BackupError(f"unexpected reply to SYNC: {line[:60]!r}")


def fetch_rdb(client: redis.Redis, output: Output) -> None:
    """Stream one server's RDB into `output`, checking it on the way; raise if it is not sound."""
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        check = RdbCheck()
        for chunk in _payload(connection):
            check.update(chunk)
            output.write(chunk)
        check.verify()
    finally:
        # After SYNC the connection is a replica link: never hand it back for reuse.
        connection.disconnect()  # type: ignore[no-untyped-call]
        pool.release(connection)


# Standalone: one series. Cluster: one series per primary, named by the hash slots it serves
# (`slots-0-5460`), which survive a failover and a pod's new IP; `<host>_<port>` is how earlier
# versions named them, matched so that retention ages those files out too.
STANDALONE_NAME = re.compile(rf"redis-backup-{STAMP}\.rdb")
CLUSTER_NAME = re.compile(
    rf"redis-backup-{STAMP}-(?P<series>slots-\d+-\d+|[A-Za-z0-9._]+_\d+)\.rdb"
)

SlotRanges = list[tuple[int, int]]


def slot_ranges(slots: Iterable[int]) -> SlotRanges:
    """Slot numbers as sorted (first, last) runs: [0, 1, 2, 7] -> [(0, 2), (7, 7)]."""
    ranges: SlotRanges = []
    for slot in sorted(slots):
        if ranges and ranges[-1][1] == slot - 1:
            ranges[-1] = (ranges[-1][0], slot)
        else:
            ranges.append((slot, slot))
    return ranges


def primary_slots(cluster: RedisCluster) -> dict[str, SlotRanges]:
    """host:port -> the slot ranges that primary serves, from the client's slot table
    (slot -> [primary, replicas...]) as Target.nodes() has just re-read it."""
    owned: dict[str, list[int]] = {}
    for slot, nodes in cluster.nodes_manager.slots_cache.items():
        owned.setdefault(nodes[0].name, []).append(slot)
    return {name: slot_ranges(slots) for name, slots in owned.items()}


def series_name(ranges: SlotRanges) -> str:
    """A primary's series: its first slot range. The replica promoted in its place serves the
    same slots and so continues the series; only a resharding that moves them starts a new one."""
    first, last = ranges[0]
    return f"slots-{first}-{last}"


def describe(ranges: SlotRanges) -> str:
    """Every range a primary serves, for the log line: "0-100,5000-5460"."""
    return ",".join(f"{first}-{last}" for first, last in ranges)


def backup_redis(target: Target, dest: Path, keep_days: int) -> Iterator[Written]:
    """One RDB per node (one per primary in a Cluster), each followed by retention."""
    try:
        nodes = target.nodes()
        if target.settings.mode == "cluster":
            slots = primary_slots(target.client)
            # A primary that serves no slots holds no keys: nothing to back up.
            plan = [
                (name, client, f"-{series_name(slots[name])}", {"slots": describe(slots[name])})
                for name, client in nodes
                if name in slots
            ]
            pattern, current = CLUSTER_NAME, {suffix[1:] for _, _, suffix, _ in plan}
        else:
            plan = [(name, client, "", {}) for name, client in nodes]
            pattern, current = STANDALONE_NAME, set()
        for name, client, suffix, details in plan:
            started = time.monotonic()
            now = datetime.now(UTC)
            final = dest / f"redis-backup-{utc_stamp(now)}{suffix}.rdb"
            try:
                with atomic_file(final) as output:
                    fetch_rdb(client, output)
            except BackupError as exc:
                raise BackupError(f"backup of {name} failed: {exc}") from None
            # Over every series at once, so that files of series gone since age out too.
            deleted = prune(dest, pattern, keep_days, now, current)
            yield Written(
                final, output.size, time.monotonic() - started, deleted, {"node": name, **details}
            )
    except redis.RedisError as exc:
        raise BackupError(
            f"cannot back up {target.settings.target()}: "
            f"{target.settings.scrub(str(exc)) or type(exc).__name__}"
        ) from None
