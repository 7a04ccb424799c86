"""The demo's Redis: a binary that cannot start is an operator's error, and leaves nothing."""

from pathlib import Path

import pytest

from lock_monitor.demo.redis_server import DemoError, RedisProcess


def test_a_binary_that_cannot_run_is_one_line(tmp_path: Path) -> None:
    binary = tmp_path / "not-a-program"
    binary.write_text("not a program")  # not executable
    server = RedisProcess(str(binary))
    with pytest.raises(DemoError, match=rf"^cannot start {binary}: Permission denied$"):
        server.start()
    assert (server.process, server.workdir) == (None, None)
