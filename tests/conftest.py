import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

# What `pytest -m "not integration"` must never start (a server the test process starts itself).
SERVERS = {
    "redis-server",
    "valkey-server",
    "prometheus-redis-exporter",
    "redis_exporter",
    "prometheus",
}
_running: list[pytest.Item] = []  # the test being set up, run or torn down


def _no_server_outside_integration(event: str, args: tuple[object, ...]) -> None:
    """Fail the start of a server by a test not marked `integration`, rather than let it run."""
    if event != "subprocess.Popen" or not _running:
        return
    argv = args[1]
    program = Path(str(argv[0] if isinstance(argv, list | tuple) else argv)).name
    if program in SERVERS and _running[-1].get_closest_marker("integration") is None:
        raise RuntimeError(f"{program} started by a test not marked integration")


sys.addaudithook(_no_server_outside_integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    _running.append(item)
    try:
        return (yield)
    finally:
        _running.pop()


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """A command run in-process configures structlog for its own stderr; undo that after."""
    yield
    structlog.reset_defaults()
