"""The replica side of SYNC against a scripted master: both payload formats, and bad payloads.

A real redis-server always sends sound RDBs, so truncation, corruption and refusals are played
by a small TCP server that answers redis-py's handshake with +OK and SYNC with given bytes.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from lock_monitor.backup.files import BackupError
from lock_monitor.backup.redis_rdb import backup_redis, crc64
from lock_monitor.config import RedisSettings
from lock_monitor.connection import connect

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
        (written,) = list(backup_redis(target, dest, keep_days=7))
    finally:
        target.close()
    return written.file


@pytest.mark.parametrize("diskless", [False, True])
def test_both_payload_formats_give_the_exact_rdb(master, tmp_path: Path, diskless: bool) -> None:
    data = sound_rdb()
    reply = b"$EOF:" + MARK + b"\r\n" + data + MARK if diskless else b"$%d\r\n" % len(data) + data
    server = master(reply)
    file = take_backup(server.port, tmp_path)
    assert file.read_bytes() == data
    assert server.commands[-3:] == [b"REPLCONF", b"REPLCONF", b"SYNC"]
    assert list(tmp_path.iterdir()) == [file]


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
