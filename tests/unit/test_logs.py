import io
import json

import pytest
import structlog

from lock_monitor import logs


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "fmt", "is_json"),
    [
        (io.StringIO(), "auto", True),
        (Terminal(), "auto", False),
        (Terminal(), "json", True),
        (io.StringIO(), "console", False),
    ],
)
def test_json_unless_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, stream: io.StringIO, fmt: logs.LogFormat, is_json: bool
) -> None:
    monkeypatch.setattr("sys.stderr", stream)
    logs.configure("info", fmt)
    structlog.get_logger().info("redis_lost", error="refused")
    line = stream.getvalue().strip()
    if is_json:
        event = json.loads(line)
        assert (event["event"], event["level"], event["error"]) == ("redis_lost", "info", "refused")
        assert "timestamp" in event
    else:
        assert "redis_lost" in line
        assert not line.startswith("{")


def test_level_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    logs.configure("warning", "json")
    log = structlog.get_logger()
    log.info("hidden")
    log.warning("shown")
    assert [json.loads(x)["event"] for x in stream.getvalue().splitlines()] == ["shown"]
