"""What one pass may spend: time, SCAN pages and keys. A server that drips its replies or a
SCAN cursor that never comes back to 0 must end a pass, not hold it (and its memory) forever.

Socket timeouts alone do not bound a pass: a server that sends a byte every few seconds never
lets one expire. So a watchdog hangs up the pass's socket at the deadline, whatever it is
waiting for, and the reader checks the deadline and the counts between round trips.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

from lock_monitor import config


class PassLimitExceeded(Exception):
    """The pass went past one of its limits; the message says which, in one line."""


class PassBudget:
    """The limits of one pass, shared by every node it reads."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds
        self.pages = 0
        self.keys = 0
        self.exceeded: str | None = None  # why the pass was stopped, once it was

    def check(self) -> None:
        """Before each round trip: stop once the deadline has passed."""
        if time.monotonic() >= self.ends:
            self._stop(f"the pass took longer than --pass-timeout ({self.seconds:g}s)")

    def count_page(self, keys: int) -> None:
        """After each SCAN page: stop a pass that never ends or sees a runaway number of keys."""
        self.pages += 1
        self.keys += keys
        if self.pages > config.MAX_PAGES_PER_PASS:
            self._stop(
                f"SCAN returned more than {config.MAX_PAGES_PER_PASS:,} pages in one pass "
                "(a cursor that never comes back to 0?)"
            )
        if self.keys > config.MAX_KEYS_PER_PASS:
            self._stop(f"more than {config.MAX_KEYS_PER_PASS:,} keys match the pattern in one pass")

    @contextlib.contextmanager
    def watching(self, sock: socket.socket | None) -> Iterator[None]:
        """While inside, `sock` is hung up on at the deadline (its reader fails at once)."""
        if sock is None:
            yield
            return
        timer = threading.Timer(max(0.0, self.ends - time.monotonic()), self._expire, [sock])
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def _expire(self, sock: socket.socket) -> None:
        self.exceeded = f"the pass took longer than --pass-timeout ({self.seconds:g}s)"
        hang_up(sock)

    def _stop(self, reason: str) -> None:
        self.exceeded = reason
        raise PassLimitExceeded(reason)


def hang_up(sock: socket.socket) -> None:
    """Wake whoever waits on `sock`: its read or write fails at once, and the connection ends.
    Called from another thread; the plain socket's shutdown leaves a TLS layer's state alone."""
    with contextlib.suppress(OSError):  # closed meanwhile
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
