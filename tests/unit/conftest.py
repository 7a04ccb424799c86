import os
import sys
from collections.abc import Callable

import pytest

from lock_monitor.cli import main
from lock_monitor.liveset import LiveSet
from tests.unit.live import REDIS_AT_START, START, Clock

RunCli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """None of the caller's LOCK_MONITOR_* and REDIS_* variables: a test sets its own."""
    for name in list(os.environ):
        if name.startswith(("LOCK_MONITOR_", "REDIS_")):
            monkeypatch.delenv(name)


@pytest.fixture
def run_cli(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> RunCli:
    """`lock-monitor ARGS` in this process: (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["lock-monitor", *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
        out, err = capsys.readouterr()
        return int(exit_info.value.code or 0), out, err

    return run


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def live(clock: Clock) -> LiveSet:
    live = LiveSet(stuck_threshold=30, clock=clock)
    live.measure_offset(REDIS_AT_START, START)
    return live
