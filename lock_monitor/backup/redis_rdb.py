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

import anycrc
import redis
from redis.cluster import RedisCluster

from lock_monitor.backup.files import (
    CHUNK_SIZE,
    STAMP_PATTERN,
    BackupError,
    BackupResult,
    PendingFile,
    atomic_file,
    os_failure,
    prune,
    remove_stale_temps,
    utc_stamp,
)
from lock_monitor.connection import Target

RDB_HEADER = re.compile(rb"REDIS\d{4}")
RDB_EOF = 0xFF
EOF_MARK_SIZE = 40  # diskless sync ends the payload with this many random bytes, announced first

# Redis' CRC-64 (Jones polynomial, reflected, init 0): the checksum an RDB file ends with.
_CRC64_REDIS = anycrc.CRC(
    width=64, poly=0xAD93D23594C935A9, init=0, refin=True, refout=True, xorout=0
)


def crc64(data: bytes | memoryview, crc: int = 0) -> int:
    """Continue `crc` over `data` (pass the previous result to checksum a stream in chunks)."""
    return int(_CRC64_REDIS.calc(data, crc))


class RdbCheck:
    """Checks an RDB as it streams past: `REDIS<4 digits>` header, EOF opcode, CRC-64 trailer."""

    def __init__(self) -> None:
        self.header = b""
        self.trailer = b""  # the last 8 bytes seen: the checksum, once the stream is complete
        self.before_trailer = -1  # the byte before them: the EOF opcode
        self.crc = 0  # of every byte before the trailer

    def update(self, chunk: bytes) -> None:
        if len(self.header) < 9:
            self.header += chunk[: 9 - len(self.header)]
        if len(chunk) <= 8:  # rare: join these few bytes rather than copy every large chunk
            chunk, self.trailer = self.trailer + chunk, b""
        if len(chunk) > 8:
            self.crc = crc64(memoryview(chunk)[:-8], crc64(self.trailer, self.crc))
            self.before_trailer = chunk[-9]
            self.trailer = chunk[-8:]
        else:
            self.trailer = chunk

    def verify(self) -> None:
        if not RDB_HEADER.fullmatch(self.header):
            raise BackupError("not an RDB file: it does not start with REDIS<version>")
        if self.before_trailer != RDB_EOF or len(self.trailer) < 8:
            raise BackupError("the RDB file is truncated: it does not end with the EOF opcode")
        stored = int.from_bytes(self.trailer, "little")
        if stored not in (0, self.crc):  # 0: Redis runs with rdbchecksum no
            raise BackupError(
                f"the RDB file is corrupt: checksum {stored:016x}, computed {self.crc:016x}"
            )


def raw_socket(connection: redis.connection.AbstractConnection) -> socket.socket:
    """The socket under a connected redis-py connection, to read the SYNC payload as bytes.

    redis-py offers no public way to read bytes that are not RESP replies, so this reads its
    private `_sock` (a plain or TLS socket once connected), here and nowhere else.
    tests/unit/test_backup_redis_rdb.py fails if redis-py renames or changes it, and
    pyproject.toml keeps redis-py below its next major version.
    """
    sock = getattr(connection, "_sock", None)
    if not isinstance(sock, socket.socket):
        raise BackupError(
            f"redis-py {redis.__version__} keeps no socket in Connection._sock: "
            "this lock-monitor cannot read the RDB with it"
        )
    return sock


class _ReplicationStream:
    """The raw byte stream of a replication connection after SYNC."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.received = 0

    def _recv(self) -> bytes:
        try:
            data = self.sock.recv(CHUNK_SIZE)
        except TimeoutError:
            raise BackupError("Redis stopped sending the RDB (timed out)") from None
        except OSError as exc:
            raise os_failure("reading the RDB failed", exc) from None
        if not data:
            raise BackupError(f"Redis closed the connection after {self.received} bytes of the RDB")
        self.received += len(data)
        return data

    def reply_line(self) -> bytes:
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

    def sized(self, size: int) -> Iterator[bytes]:
        """Disk-based sync: `$<size>` then exactly that many bytes."""
        left = size
        while left > 0:
            chunk = self.buffer or self._recv()
            self.buffer = chunk[left:]
            chunk = chunk[:left]
            left -= len(chunk)
            yield chunk

    def until_mark(self, mark: bytes) -> Iterator[bytes]:
        """Diskless sync: bytes until the stream ends with the announced 40-byte mark."""
        pending = self.buffer
        self.buffer = b""
        while not pending.endswith(mark):
            yield pending[:-EOF_MARK_SIZE]
            pending = pending[-EOF_MARK_SIZE:] + self._recv()
        yield pending[:-EOF_MARK_SIZE]


def _sync_payload(connection: redis.connection.AbstractConnection) -> Iterator[bytes]:
    """Ask for an RDB as a replica would and yield it in chunks (either transfer format)."""
    # capa eof: we understand diskless payloads; rdb-only (Redis 7+): we want no command stream.
    for args, optional in (
        (("REPLCONF", "capa", "eof"), False),
        (("REPLCONF", "rdb-only", "1"), True),
    ):
        connection.send_command(*args)  # type: ignore[no-untyped-call]
        try:
            connection.read_response()
        except redis.ResponseError:
            if not optional:
                raise
    connection.send_command("SYNC")  # type: ignore[no-untyped-call]
    stream = _ReplicationStream(raw_socket(connection))
    line = stream.reply_line()
    if line.startswith(b"-"):
        raise BackupError(f"Redis refused SYNC: {line[1:].decode(errors='replace')}")
    if line.startswith(b"$EOF:") and len(line) == 5 + EOF_MARK_SIZE:
        yield from stream.until_mark(line[5:])
    elif line.startswith(b"$") and line[1:].isdigit():
        yield from stream.sized(int(line[1:]))
    else:
        raise BackupError(f"unexpected reply to SYNC: {line[:60]!r}")


def fetch_rdb(client: redis.Redis, pending: PendingFile) -> None:
    """Stream one server's RDB into `pending`, checking it on the way; raise if it is not sound."""
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        check = RdbCheck()
        for chunk in _sync_payload(connection):
            check.update(chunk)
            pending.write(chunk)
        check.verify()
    finally:
        # After SYNC the connection is a replica link: never hand it back for reuse.
        connection.disconnect()  # type: ignore[no-untyped-call]
        pool.release(connection)


# Standalone: one series. Cluster: one series per primary, named by the hash slots it serves
# (`slots-0-5460`), which survive a failover and a pod's new IP; `<host>_<port>` is how earlier
# versions named them, matched so that retention ages those files out too.
STANDALONE_NAME = re.compile(rf"redis-backup-{STAMP_PATTERN}\.rdb")
CLUSTER_NAME = re.compile(
    rf"redis-backup-{STAMP_PATTERN}-(?P<series>slots-\d+-\d+|[A-Za-z0-9._]+_\d+)\.rdb"
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


def format_slot_ranges(ranges: SlotRanges) -> str:
    """Every range a primary serves, for the log line: "0-100,5000-5460"."""
    return ",".join(f"{first}-{last}" for first, last in ranges)


def backup_redis(target: Target, dest: Path, keep_days: int) -> Iterator[BackupResult]:
    """One RDB per node (one per primary in a Cluster), each followed by retention."""
    remove_stale_temps(dest, STANDALONE_NAME, CLUSTER_NAME)
    try:
        nodes = target.nodes()
        # Per node: its name, client, series (cluster only) and what the log line adds.
        plan: list[tuple[str, redis.Redis, str | None, dict[str, object]]]
        if target.settings.mode == "cluster":
            slots = primary_slots(target.client)
            # A primary that serves no slots holds no keys: nothing to back up.
            plan = [
                (name, client, series_name(ranges), {"slots": format_slot_ranges(ranges)})
                for name, client in nodes
                if (ranges := slots.get(name))
            ]
            pattern = CLUSTER_NAME
        else:
            plan = [(name, client, None, {}) for name, client in nodes]
            pattern = STANDALONE_NAME
        current_series = {series for _, _, series, _ in plan if series}
        for name, client, series, details in plan:
            started = time.monotonic()
            now = datetime.now(UTC)
            suffix = f"-{series}" if series else ""
            final = dest / f"redis-backup-{utc_stamp(now)}{suffix}.rdb"
            try:
                with atomic_file(final) as pending:
                    fetch_rdb(client, pending)
            except BackupError as exc:
                raise BackupError(f"backup of {name} failed: {exc}") from None
            # Over every series at once, so that files of series gone since age out too.
            deleted = prune(dest, pattern, keep_days, now, current_series)
            yield BackupResult(
                final, pending.size, time.monotonic() - started, deleted, {"node": name, **details}
            )
    except redis.RedisError as exc:
        raise BackupError(
            f"cannot back up {target.settings.target()}: "
            f"{target.settings.scrub(str(exc)) or type(exc).__name__}"
        ) from None
