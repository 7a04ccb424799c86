"""`lock-monitor run` against servers a real Redis will not imitate, scripted in tests/resp.py:
a megabyte in an error text, replies dripped a byte at a time, a SCAN cursor that never ends."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.resp import Error, fake_redis
from tests.servers import running_monitor, wait_for

pytestmark = pytest.mark.integration

FAST = ("--interval", "0.2", "--redis-timeout", "1")


def fetch(base: str, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(base + path, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_a_megabyte_error_text_is_cut_everywhere_it_shows() -> None:
    huge = "ERR " + "A" * 1_000_000

    def handler(command: list[bytes]) -> object:
        return "OK" if command[0] == b"CLIENT" else Error(huge)

    with fake_redis(handler) as server, running_monitor("--redis-url", server.url, *FAST) as mon:
        wait_for(lambda: mon.value("lock_monitor_scans_total", result="error"), what="a failure")
        status, headers, ready = fetch(mon.base, "/readyz")
        assert status == 503
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert 0 < len(ready) < 1000
        assert len(fetch(mon.base, "/")[2]) < 10_000
        error = json.loads(fetch(mon.base, "/locks")[2])["last_error"]
        assert error.startswith(f"{server.url}: ResponseError: AAA")
        assert error.endswith("A…")
        assert len(error) < 1000
    assert all(len(line) < 2000 for line in mon.log_lines)
    assert any("AAA" in line for line in mon.log_lines)
