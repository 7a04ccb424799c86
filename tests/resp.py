"""A scripted fake Redis that speaks RESP, for the hostile servers a real Redis will not play:
escape sequences or a megabyte in an error, replies dripped a byte at a time, a SCAN cursor
that never comes back to 0. Each test scripts the replies; the fake only parses commands.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


class Error(str):
    """An error reply: `-<text>`."""


@dataclass(frozen=True)
class Drip:
    """A reply sent one byte at a time, `every` seconds apart (forever if `data` is endless)."""

    data: bytes
    every: float


def encode(value: Any) -> bytes:
    """RESP: None is a nil bulk, str an OK-style status, Error an error, bytes a bulk."""
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, Error):
        return b"-" + value.encode() + b"\r\n"
    if isinstance(value, str):
        return b"+" + value.encode() + b"\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, list | tuple):
        return b"*%d\r\n" % len(value) + b"".join(encode(item) for item in value)
    if isinstance(value, dict):  # RESP 3: only HELLO's reply uses one
        return b"%%%d\r\n" % len(value) + b"".join(encode(k) + encode(v) for k, v in value.items())
    raise TypeError(value)


Handler = Callable[[list[bytes]], Any]  # a command (name upper-cased) -> a value, bytes or Drip


def default_reply(command: list[bytes]) -> Any:
    """What a permissive server says to the commands redis-py sends on connecting."""
    if command[0] in (b"CLIENT", b"SELECT", b"AUTH"):
        return "OK"
    if command[0] == b"PING":
        return "PONG"
    if command[0] == b"HELLO":  # redis-py 8 speaks RESP 3, a superset of what the fake sends
        return {b"server": b"fake", b"proto": 3}
    if command[0] == b"TIME":
        return [b"1800000000", b"0"]
    return Error("ERR unknown command")


class FakeRedis:
    """Serves `handler` on a loopback port, one thread per connection, until `stop`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.commands: list[list[bytes]] = []  # every command received, in order
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._connections: list[socket.socket] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> FakeRedis:
        self._spawn(self._accept)
        return self

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept() (close alone does not)
        self._listener.close()
        for conn in self._connections:
            with contextlib.suppress(OSError):  # closed by the client already
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # replies go out at once
            self._connections.append(conn)
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            try:
                for command in _commands(reader):
                    self.commands.append(command)
                    if self._stop.is_set() or not self._send(conn, self.handler(command)):
                        return
            except OSError:  # the client reset the connection
                return

    def _send(self, conn: socket.socket, reply: Any) -> bool:
        try:
            if isinstance(reply, Drip):
                for byte in reply.data:
                    if self._stop.wait(reply.every):
                        return False
                    conn.sendall(bytes([byte]))
            else:
                conn.sendall(reply if isinstance(reply, bytes) else encode(reply))
        except OSError:  # the client gave up: that is what the deadline tests wait for
            return False
        return True


def _commands(reader: Any) -> Iterator[list[bytes]]:
    """Each command a client sends (RESP arrays of bulk strings), the name upper-cased."""
    while header := reader.readline():
        if not header.startswith(b"*"):
            return
        args = []
        for _ in range(int(header[1:])):
            length = int(reader.readline()[1:])
            args.append(reader.read(length + 2)[:-2])
        args[0] = args[0].upper()
        yield args


@contextmanager
def fake_redis(handler: Handler) -> Iterator[FakeRedis]:
    server = FakeRedis(handler).start()
    try:
        yield server
    finally:
        server.stop()
