"""Every test in this folder starts real servers: marked `integration` here, once, so that
`pytest -m "not integration"` starts none."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import RedisServer, redis_server

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def redis_srv(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis") as server:
        yield server
