from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """A command run in-process configures structlog for its own stderr; undo that after."""
    yield
    structlog.reset_defaults()
