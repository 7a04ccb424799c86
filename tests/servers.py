"""Real servers for integration tests, started on free loopback ports and stopped after.

Under CI=true a missing binary is a failure, never a skip: a green run must mean the
integration tests really ran.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], T | None], timeout: float = 15.0, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the thing polled for is not there yet
            last_error = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last_error!r})")


def require_binary(name: str, env_override: str | None = None) -> str:
    """Find a server binary; skip locally when it is missing, fail under CI=true."""
    path = os.environ.get(env_override, "") if env_override else ""
    path = path or shutil.which(name) or ""
    if path:
        return path
    message = f"{name} is not installed (see .ci/run for how CI installs it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


class RedisServer:
    """One redis-server process on a loopback port, with its data in `workdir`."""

    def __init__(
        self, workdir: Path, port: int | None = None, *extra_args: str, binary: str | None = None
    ) -> None:
        self.binary = binary or require_binary("redis-server", "LOCK_MONITOR_TEST_REDIS_SERVER")
        self.workdir = workdir
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)  # type: ignore[arg-type]

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.workdir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(self.workdir / "redis.log"),
            *self.extra_args,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(self._ready, timeout=10, what=f"redis-server on port {self.port}")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            err = self.process.stderr.read().decode() if self.process.stderr else ""
            log = self.workdir / "redis.log"
            detail = log.read_text() if log.exists() else ""
            raise RuntimeError(f"redis-server exited: {err} {detail}")
        try:
            return bool(redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1).ping())
        except redis.AuthenticationError:
            return True  # up, and asking for a password
        except redis.ResponseError as exc:
            return "NOAUTH" in str(exc)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


@contextmanager
def redis_server(workdir: Path, *extra_args: str) -> Iterator[RedisServer]:
    server = RedisServer(workdir, None, *extra_args).start()
    try:
        yield server
    finally:
        server.stop()


def monitor_command(*args: str) -> list[str]:
    """The lock-monitor CLI of this checkout, run as a separate process."""
    return [sys.executable, "-m", "lock_monitor", *args]


def monitor_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCK_MONITOR_", "REDIS_"))}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


class MonitorProcess:
    """`lock-monitor run` as a separate process on a free port, as it runs in production."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.args = ["run", "--listen-address", "127.0.0.1", "--port", str(self.port), *args]
        self.env = env or monitor_env()
        self.process: subprocess.Popen[str] | None = None
        self.log_lines: list[str] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MonitorProcess:
        self.process = subprocess.Popen(
            monitor_command(*self.args),
            env=self.env,
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for(lambda: self.get("/healthz")[0] == 200, what="lock-monitor /healthz")
        return self

    def get(self, path: str) -> tuple[int, str]:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"lock-monitor exited with {self.process.returncode}")
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def metrics(self) -> dict[str, list[Sample]]:
        """/metrics parsed by prometheus_client: sample name -> samples."""
        status, body = self.get("/metrics")
        assert status == 200
        samples: dict[str, list[Sample]] = {}
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append(sample)
        return samples

    def value(self, name: str, **labels: str) -> float | None:
        """One sample's value, or None when the metric is absent."""
        for sample in self.metrics().get(name, []):
            if all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
        return None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop it and return the exit code; the log is kept in `log_lines`."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=10)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            assert self.process.stderr is not None
            self.log_lines = self.process.stderr.read().splitlines()
        return code

    def events(self) -> list[dict[str, object]]:
        """The JSON log lines, after `stop()`."""
        return [json.loads(line) for line in self.log_lines if line.startswith("{")]


@contextmanager
def running_monitor(*args: str, env: dict[str, str] | None = None) -> Iterator[MonitorProcess]:
    monitor = MonitorProcess(*args, env=env).start()
    try:
        yield monitor
    finally:
        monitor.stop()


def run_monitor(
    *args: str, env: dict[str, str] | None = None, file_size_limit: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI once to completion. `file_size_limit` (RLIMIT_FSIZE, bytes) makes any write
    past that size fail with EFBIG in the CLI process only: a full disk as the process sees it."""

    def limit() -> None:
        import resource  # POSIX only, like the servers these tests start

        if file_size_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run(
        monitor_command(*args),
        env=env or monitor_env(),
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit,  # only setrlimit between fork and exec
        check=False,
    )


def cli_error(result: subprocess.CompletedProcess[str]) -> str:
    """A failed CLI run: exit 1 and exactly one `lock-monitor: error: ...` line on stderr."""
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("lock-monitor: error: ")
    return line


def cli_record(result: subprocess.CompletedProcess[str], event: str) -> dict[str, Any]:
    """A successful backup/restore run: exit 0 and ONE JSON log line naming a complete file."""
    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.splitlines()
    record: dict[str, Any] = json.loads(line)
    assert record["event"] == event
    assert record["bytes"] == Path(record["file"]).stat().st_size > 0
    assert record["seconds"] >= 0
    return record
