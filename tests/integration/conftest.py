"""Every test in this folder starts real servers: marked `integration` here, once, so that
`pytest -m "not integration"` starts none."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import RedisServer, one_node_cluster, redis_server

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


@pytest.fixture(scope="session")
def _one_node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """Started once: a new cluster node turns its state ok only two seconds after it started."""
    with one_node_cluster(tmp_path_factory.mktemp("one-node-cluster")) as server:
        yield server


@pytest.fixture
def cluster_node(_one_node_cluster: RedisServer) -> RedisServer:
    """The one-node Cluster of `servers.one_node_cluster`, emptied for each test."""
    _one_node_cluster.client().flushall()
    return _one_node_cluster
