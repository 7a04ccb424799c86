"""The status page in a real headless Chromium, against a real exporter and Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.browser import Browser, browser
from tests.servers import MonitorProcess, RedisServer, mixed_locks, running_monitor, wait_for

# The page refreshes every --interval, but at most every 2 s.
ARGS = ("--interval", "0.5", "--redis-timeout", "1", "--stuck-threshold", "30")

COUNTS = """Object.fromEntries([...document.querySelectorAll("[data-count]")].map(
    tile => [tile.dataset.count, tile.querySelector("b").textContent]))"""
ROWS = """[...document.querySelectorAll("#locks tbody tr")].filter(row => !row.hidden).map(row =>
    Object.fromEntries([...row.cells].map(cell => [cell.dataset.label, cell.textContent.trim()])
        .concat([["stuck", row.classList.contains("stuck")]])))"""


@pytest.fixture(scope="module")
def _chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """One Chromium for the module (it takes half a second to start): each test opens its page."""
    with browser(tmp_path_factory.mktemp("chromium")) as driven:
        yield driven


@pytest.fixture
def chromium(_chromium: Browser) -> Browser:
    """The module's Chromium as a test finds a new one: a blank page, its scripts on, and no
    problem seen yet (the last test's page is gone before they are forgotten)."""
    _chromium.send("Emulation.setScriptExecutionDisabled", value=False)
    _chromium.open("about:blank")
    _chromium.problems.clear()
    return _chromium


@pytest.fixture
def monitor(redis_srv: RedisServer) -> Iterator[MonitorProcess]:
    mixed_locks(redis_srv.client(), stuck=2, fresh=3, no_ttl=1)
    with running_monitor("--redis-url", redis_srv.url, *ARGS) as running:
        wait_for(lambda: running.value("active_locks_count") == 6, what="a first pass")
        yield running


def test_the_page_shows_counts_charts_and_locks_stuck_first(
    chromium: Browser, monitor: MonitorProcess, redis_srv: RedisServer
) -> None:
    chromium.open(monitor.base + "/")
    counts = chromium.evaluate(COUNTS)
    assert float(counts.pop("oldest age").rstrip("s")) >= 90  # mixed_locks' stuck ones
    assert counts == {"active": "6", "stuck": "2", "without TTL": "1"}
    assert chromium.evaluate("document.querySelector('[data-count=stuck]').className") == (
        "tile stuck alert"
    )
    rows = chromium.evaluate(ROWS)
    assert [row["stuck"] for row in rows] == [True, True, False, False, False, False]
    assert {rows[0]["Key"], rows[1]["Key"]} == {"lock:appointment:s0", "lock:appointment:s1"}
    by_key = {row["Key"]: row for row in rows}
    assert by_key["lock:appointment:s1"]["Holder"] == "worker-1"
    assert by_key["lock:appointment:n0"]["TTL"] == "never"
    assert "since first seen" in by_key["lock:appointment:n0"]["Age"]
    assert by_key["lock:appointment:s0"]["Inspect"].startswith(
        f"redis-cli -u redis://127.0.0.1:{redis_srv.port}/0 GET lock:appointment:s0"
    )
    assert chromium.evaluate("document.querySelectorAll('#locks meter').length") == 6
    charts = chromium.evaluate(
        "[...document.querySelectorAll('#charts figure')].map(f => [f.dataset.chart,"
        " f.querySelectorAll('polyline, circle').length > 0])"
    )
    assert charts == [
        ["Active locks", True],
        ["Stuck locks", True],
        ["Locks without TTL", True],
        ["Oldest lock age", True],
    ]
    assert "Redis up" in chromium.evaluate("document.getElementById('status').textContent")
    assert chromium.problems == []


def test_it_refreshes_in_place_keeping_filter_and_scroll(
    chromium: Browser, monitor: MonitorProcess, redis_srv: RedisServer
) -> None:
    chromium.open(monitor.base + "/", height=500)
    chromium.evaluate("window.notReloaded = true; window.scrollTo(0, 300)")
    chromium.evaluate(
        "const box = document.getElementById('filter'); box.value = 's1';"
        "box.dispatchEvent(new Event('input'))"
    )
    assert [row["Key"] for row in chromium.evaluate(ROWS)] == ["lock:appointment:s1"]
    assert chromium.evaluate("location.search") == "?q=s1"

    mixed_locks(redis_srv.client(), stuck=3, fresh=0)  # a third stuck lock: s2
    wait_for(lambda: chromium.evaluate(COUNTS)["stuck"] == "3", what="the page refreshed")
    assert chromium.evaluate("window.notReloaded") is True
    assert chromium.evaluate("document.getElementById('filter').value") == "s1"
    assert [row["Key"] for row in chromium.evaluate(ROWS)] == ["lock:appointment:s1"]
    assert chromium.evaluate("document.getElementById('shown').textContent") == "1 of 7 shown"
    assert chromium.evaluate("window.scrollY") == 300
    assert chromium.problems == []


def test_redis_down_shows_the_last_good_data_greyed_out_with_its_age(
    chromium: Browser, monitor: MonitorProcess, redis_srv: RedisServer
) -> None:
    chromium.open(monitor.base + "/")
    redis_srv.stop()
    wait_for(
        lambda: chromium.evaluate("document.getElementById('status').className") == "status down",
        what="the page showing Redis down",
    )
    status = chromium.evaluate("document.getElementById('status').textContent")
    assert "Redis cannot be read" in status
    assert "not the current state" in status
    assert " ago" in status
    for part in ("counts", "charts", "locks"):
        assert "stale" in chromium.evaluate(f"document.getElementById('{part}').className")
    assert chromium.evaluate(COUNTS)["stuck"] == "2"  # the last good pass, kept
    assert chromium.evaluate("document.title") == "lock-monitor: Redis DOWN"
    assert chromium.problems == []


def test_without_javascript_the_numbers_and_the_table_are_there(
    chromium: Browser, monitor: MonitorProcess
) -> None:
    chromium.send("Emulation.setScriptExecutionDisabled", value=True)
    chromium.open(monitor.base + "/")
    assert chromium.evaluate(COUNTS)["active"] == "6"  # evaluate still runs: only the page's
    assert len(chromium.evaluate(ROWS)) == 6  # own scripts are off
    assert chromium.evaluate("document.querySelector('.filter').hidden") is True
    assert chromium.problems == []


def test_readable_on_a_phone(chromium: Browser, monitor: MonitorProcess) -> None:
    chromium.open(monitor.base + "/", width=390, height=844, mobile=True)
    assert chromium.evaluate("document.documentElement.scrollWidth") <= 390
    assert chromium.evaluate(
        "getComputedStyle(document.querySelector('#locks tbody tr')).display"
    ) == ("block")  # each lock a card
    assert chromium.problems == []


WIDTHS = """Object.fromEntries(["Key", "Value", "Inspect"].map(label => [label, Math.min(
    ...[...document.querySelectorAll(`#locks td[data-label="${label}"]`)].map(
        cell => cell.getBoundingClientRect().width))]))"""


def test_long_keys_wrap_on_a_desktop_leaving_the_value_and_command_readable(
    chromium: Browser, monitor: MonitorProcess, redis_srv: RedisServer
) -> None:
    """A key of 200 characters without a space once took the whole width: the value and the
    redis-cli command were squeezed to a few characters a line, the page scrolled sideways."""
    client = redis_srv.client()
    now_ms = client.time()[0] * 1000
    client.set(
        "lock:appointment:" + "tenant-eu-1-slot-0930-" * 8, f"{now_ms}:{'w' * 150}", px=30_000
    )
    client.set("lock:appointment:" + "a" * 180, "token", px=30_000)
    wait_for(lambda: monitor.value("active_locks_count") == 8, what="the long keys read")
    chromium.open(monitor.base + "/", width=1280, height=900)
    assert chromium.evaluate("document.documentElement.scrollWidth") <= 1280
    widths = chromium.evaluate(WIDTHS)
    assert widths["Key"] >= 180, widths
    assert widths["Value"] >= 120, widths
    assert widths["Inspect"] >= 250, widths
    assert chromium.problems == []


def test_the_harness_sees_a_csp_violation(chromium: Browser, monitor: MonitorProcess) -> None:
    """Why `problems == []` above means something: a blocked inline style is caught."""
    chromium.open(monitor.base + "/")
    chromium.evaluate("document.body.setAttribute('style', 'color: red')")
    wait_for(lambda: chromium.evaluate("1") and chromium.problems, what="the violation")
    assert "Content Security Policy" in json.dumps(chromium.problems)
