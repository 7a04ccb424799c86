import io
import json

import pytest
import structlog

from lock_monitor import logs
from lock_monitor.views import printable


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


def test_console_logs_show_control_characters_as_escapes_and_json_keeps_them_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without a space, CR, LF or quote, structlog's console renderer prints a value as it is.
    key = "lock:\x1b]0;owned\x07\x1b[2J\x9b31m"
    for fmt, stream in [("console", Terminal()), ("json", io.StringIO())]:
        monkeypatch.setattr("sys.stderr", stream)
        logs.configure("info", fmt)  # type: ignore[arg-type]
        structlog.get_logger().warning(key, key=key, error="ERR\r\nfake line " + key)
        output = stream.getvalue()
        if fmt == "json":
            event = json.loads(output)
            assert (event["event"], event["key"]) == (key, key)
            assert event["error"] == "ERR\r\nfake line " + key
        else:
            assert printable(key) in output
            assert len(output.strip().splitlines()) == 1
            assert not any(char in output for char in "\x07\r\x9b")
            assert "\x1b]" not in output  # the renderer's own colours are CSI, never OSC
            assert "\x1b[2J" not in output
        structlog.reset_defaults()
