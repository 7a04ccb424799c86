"""The status page: what it shows of a document, escaped, under its own CSP."""

from __future__ import annotations

import shlex
from html.parser import HTMLParser

import pytest

from lock_monitor.history import PASS_SERIES, History
from lock_monitor.monitor import MonitorState
from lock_monitor.page import inspect_command, status_page
from lock_monitor.snapshot import Snapshot
from lock_monitor.views import status_document
from tests.unit.documents import EVIL, FRESH, NODES, NOW, SNAPSHOT, TARGET, TOKEN, document_of


def test_status_page_escapes_what_it_shows() -> None:
    state = MonitorState(
        redis_up=False,
        snapshot=SNAPSHOT,
        last_error="<img src=x>",
        nodes=(("<node>", False),),
    )
    page = status_page(status_document(state, TARGET, "standalone", NOW, stuck_threshold=30))
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page
    assert "&lt;img src=x&gt;" in page
    assert "&lt;node&gt;: DOWN" in page
    assert TARGET in page


def test_status_page_says_when_pacing_stretches_the_wait() -> None:
    paced = MonitorState(redis_up=True, snapshot=SNAPSHOT, delay_seconds=38.0, paced=True)
    page = status_page(status_document(paced, TARGET, "standalone", NOW, stuck_threshold=30))
    assert "Pacing" in page
    assert "38.0s" in page
    calm = MonitorState(redis_up=True, snapshot=SNAPSHOT, delay_seconds=5.0)
    calm_page = status_page(status_document(calm, TARGET, "standalone", NOW, stuck_threshold=30))
    assert "Pacing" not in calm_page


class Markup(HTMLParser):
    """Every tag with its attributes, and the text of each <script> and <style>."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[str] = []
        self._open: str | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._open = tag

    def handle_data(self, data: str) -> None:
        if self._open in ("script", "style") and data.strip():
            self.inline.append(data)


def test_the_page_needs_nothing_its_csp_forbids() -> None:
    """No inline script or style, no style or on* attribute, nothing from elsewhere."""
    page = status_page(
        document_of(MonitorState(redis_up=True, snapshot=SNAPSHOT, nodes=NODES)),
        History().window(NOW),
        PASS_SERIES,
    )
    markup = Markup(page)
    assert markup.inline == []
    for tag, attrs in markup.tags:
        assert "style" not in attrs, tag
        assert not [name for name in attrs if name.startswith("on")], tag
        for name in ("src", "href"):
            link = attrs.get(name) or ""
            assert not link or link.startswith(("/", "data:", "#")), (tag, link)
    assert ("script", {"src": "/static/page.js", "defer": None}) in markup.tags


def test_stuck_rows_come_first_with_the_holder_and_a_bar_against_the_threshold() -> None:
    snapshot = Snapshot(NOW - 2, 0.25, 3, 3, 1, 1, (FRESH, TOKEN, EVIL))  # not by age: as kept
    page = status_page(document_of(MonitorState(redis_up=True, snapshot=snapshot)))
    rows = [attrs for tag, attrs in Markup(page).tags if tag == "tr" and "data-key" in attrs]
    assert [(row["data-key"], row.get("class")) for row in rows] == [
        (EVIL.key, "stuck"),
        (FRESH.key, None),
        (TOKEN.key, None),
    ]
    assert '<td data-label="Holder"><span class="holder">api-7</span></td>' in page
    meters = [attrs for tag, attrs in Markup(page).tags if tag == "meter"]
    assert meters[0] == {
        "min": "0", "max": "60", "low": "15", "high": "30", "optimum": "0", "value": "40.0",
    }  # fmt: skip
    assert "since first seen" in page


def test_redis_down_greys_out_the_last_good_data_and_says_how_old() -> None:
    down = MonitorState(redis_up=False, snapshot=SNAPSHOT, last_error="ConnectionError: refused")
    page = status_page(document_of(down))
    assert "<title>lock-monitor: Redis DOWN</title>" in page
    assert "not the current state" in page
    assert '<span class="ago" data-ago="2.000">2 s</span> ago' in page
    for part in ("counts", "charts", "locks"):
        assert f'id="{part}" class="{part} stale"' in page
    up = status_page(document_of(MonitorState(redis_up=True, snapshot=SNAPSHOT)))
    assert "stale" not in up
    assert "<title>lock-monitor: 1 stuck, 2 active</title>" in up


@pytest.mark.parametrize("snapshot", [SNAPSHOT, None])
def test_an_error_ending_in_a_period_is_not_given_another(snapshot: Snapshot | None) -> None:
    error = "ConnectionError: Error 111 connecting to 127.0.0.1:6379. Connection refused."
    page = status_page(
        document_of(MonitorState(redis_up=False, snapshot=snapshot, last_error=error))
    )
    assert "Connection refused. " in page
    assert ".." not in page


@pytest.mark.parametrize(
    ("key", "mode", "target", "command"),
    [
        (
            "lock:appointment:17",
            "standalone",
            "redis://redis:6379/0",
            "redis-cli -u redis://redis:6379/0 GET lock:appointment:17",
        ),
        (
            "lock:it's $(rm -rf ~) `x`",
            "cluster",
            "rediss://lockmon@redis-0.redis:6379/0",
            "redis-cli -u rediss://redis-0.redis:6379/0 --user lockmon --askpass -c "
            "GET 'lock:it'\"'\"'s $(rm -rf ~) `x`'",
        ),
        (
            "lock:appointment:17",
            "sentinel",
            "sentinel://s1:26379,s2:26379/mymaster",
            "redis-cli -h 10.0.0.7 -p 6379 GET lock:appointment:17",
        ),
    ],
)
def test_the_inspect_command_reads_the_exact_key_quoted_for_a_shell(
    key: str, mode: str, target: str, command: str
) -> None:
    document = {"mode": mode, "target": target, "nodes": [{"node": "10.0.0.7:6379", "up": True}]}
    lock = {"key": key, "kind": "string"}
    assert inspect_command(document, lock) == command
    assert shlex.split(command)[-1] == key
    assert "DEL" not in command.upper().split()


def test_no_inspect_command_for_a_key_not_shown_exactly() -> None:
    document = {"mode": "standalone", "target": TARGET, "nodes": []}
    assert inspect_command(document, {"key": "lock:\\xff", "kind": "string"}) is None
    assert inspect_command(document, {"key": "lock:" + "x" * 200 + "…", "kind": "string"}) is None
    assert inspect_command(document, {"key": "lock:r", "kind": "hash"}) == (
        f"redis-cli -u {TARGET} HGETALL lock:r"
    )
    assert inspect_command(document, {"key": "lock:q", "kind": "list"}) == (
        f"redis-cli -u {TARGET} TYPE lock:q"
    )


def test_charts_only_when_there_is_a_history() -> None:
    state = MonitorState(redis_up=True, snapshot=SNAPSHOT)
    history = History()
    history.record(NOW - 5, {"active": 2, "stuck": 1, "without_ttl": 1, "oldest_age_seconds": 40})
    page = status_page(document_of(state), history.window(NOW), PASS_SERIES)
    assert page.count('<figure class="chart"') == 4
    assert '<figure class="chart"' not in status_page(document_of(state))
