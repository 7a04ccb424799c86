"""One view of a snapshot: the JSON document of /locks and `locks --json`, and the table and
the page rendered from it."""

from __future__ import annotations

import json
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from click.testing import CliRunner

from lock_monitor import triage
from lock_monitor.cli import cli
from lock_monitor.config import RedisSettings, ScanSettings
from lock_monitor.events import EventsStatus, EventsView
from lock_monitor.livecounts import OUTCOMES, EventCounters, HoldHistogram, LiveCounts, RecentEnd
from lock_monitor.locks import Lock
from lock_monitor.metrics import build_registry
from lock_monitor.monitor import MonitorState
from lock_monitor.page import status_page
from lock_monitor.passes import PassResult
from lock_monitor.snapshot import Snapshot
from lock_monitor.stuck_log import StuckLocks
from lock_monitor.triage import EXIT_STUCK, exit_code
from lock_monitor.views import (
    NO_TTL,
    lock_table,
    printable,
    status_document,
)
from lock_monitor.web import App
from tests.unit.documents import EVIL, FRESH, NODES, NOW, SNAPSHOT, TARGET


def served_document(state: MonitorState) -> dict[str, Any]:
    """GET /locks from the daemon's WSGI app."""
    registry = build_registry(lambda: state, "standalone")
    app = App(lambda: state, lambda: True, registry, TARGET, "standalone", interval=5)
    environ: dict[str, Any] = {"PATH_INFO": "/locks"}
    setup_testing_defaults(environ)
    body = b"".join(app(environ, lambda status, headers: None))
    return json.loads(body)  # type: ignore[no-any-return]


def printed(monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    """`lock-monitor locks ...` in-process, its one pass seeing SNAPSHOT."""

    def read_once(redis: RedisSettings, scan: ScanSettings, *args: Any) -> PassResult:
        return PassResult(SNAPSHOT, StuckLocks(), NODES)

    monkeypatch.setattr(triage, "read_once", read_once)
    result = CliRunner().invoke(cli, ["locks", "--redis-url", TARGET, *args])
    assert result.exit_code == 0, result.output
    return result.output


def shape(value: Any) -> Any:
    """The keys of a document, nested, without the values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value[:1]]
    return None


def test_locks_endpoint_and_locks_json_share_one_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    served = served_document(MonitorState(redis_up=True, snapshot=SNAPSHOT, nodes=NODES))
    command = json.loads(printed(monkeypatch, "--json"))
    assert shape(served) == shape(command)
    assert set(served) == {
        "target", "mode", "redis_up", "last_error", "nodes", "pass", "stuck_threshold_seconds",
        "next_pass_delay_seconds", "pacing_active", "locks", "events",
    }  # fmt: skip
    assert served["events"] is command["events"] is None  # not followed: --events off, one pass
    assert served["pass"] == command["pass"] | {"seconds_ago": served["pass"]["seconds_ago"]}
    assert served["locks"] == command["locks"]
    assert command["locks"][0] == {
        "key": "lock:appointment:<script>",
        "value": "<b>x</b>",
        "kind": "string",
        "ttl_seconds": None,  # JSON says null; people read NO_TTL
        "age_seconds": 40.0,
        "age_source": "value",
        "stuck": True,
        "holder": None,  # no "<epoch>:<holder>" value
    }
    assert (served["next_pass_delay_seconds"], command["next_pass_delay_seconds"]) == (0.0, None)


def test_locks_stuck_only_keeps_the_counts_of_the_whole_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    document = json.loads(printed(monkeypatch, "--json", "--stuck"))
    assert [lock["key"] for lock in document["locks"]] == [EVIL.key]
    assert (document["pass"]["active"], document["pass"]["stuck"]) == (2, 1)


def test_document_before_any_successful_pass() -> None:
    state = MonitorState(redis_up=False, last_error="ConnectionError: refused", delay_seconds=1.5)
    document = status_document(state, TARGET, "standalone", NOW, stuck_threshold=30)
    assert document["pass"] is None
    assert document["locks"] == []
    assert (document["redis_up"], document["next_pass_delay_seconds"]) == (False, 1.5)
    assert "No pass has succeeded yet." in status_page(document)


def test_table_oldest_first_with_the_counts_and_never_for_no_ttl(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    header, evil, fresh, summary = printed(monkeypatch).splitlines()
    assert header.split() == ["KEY", "AGE", "TTL", "STUCK", "VALUE"]
    assert evil.split() == [EVIL.key, "40.0s", NO_TTL, "yes", EVIL.value]
    assert fresh.split() == [FRESH.key, "1.0s", "29.0s", "no", FRESH.value]
    assert header.index("AGE") == evil.index("40.0s") == fresh.index("1.0s")  # aligned
    assert summary == f"2 active, 1 stuck, 1 without TTL ({TARGET})"


def test_no_ttl_reads_the_same_in_the_table_and_on_the_page() -> None:
    document = status_document(
        MonitorState(redis_up=True, snapshot=SNAPSHOT), TARGET, "x", NOW, stuck_threshold=30
    )
    assert f'<td data-label="TTL">{NO_TTL}</td>' in status_page(document)
    assert f" {NO_TTL} " in lock_table(document)
    assert "no TTL" not in status_page(document) + lock_table(document)


def event_counters(*recent: RecentEnd) -> EventCounters:
    """The events' counters since start, with these last ends."""
    hold = HoldHistogram(buckets=(0,) * 18, total=0.0)
    return EventCounters(
        acquisitions=12,
        renewals=3,
        releases={"released": 7, "expired": 2, "evicted": 1},
        received=40,
        corrections=1,
        hold=dict.fromkeys(OUTCOMES, hold),
        recent=recent,
    )


def test_events_in_the_document_the_table_and_the_page() -> None:
    counters = event_counters(
        RecentEnd("lock:appointment:old", "expired", 30.2, NOW - 5),
        RecentEnd("lock:appointment:<i>", "evicted", None, NOW - 1),
    )
    status = EventsStatus("auto", "live", None, (("redis:6379", "up"),), True, reconnects=1)
    view = EventsView(status, LiveCounts(4, 1, 0, 31.5), counters)
    state = MonitorState(redis_up=True, snapshot=SNAPSHOT, nodes=NODES)
    document = status_document(state, TARGET, "standalone", NOW, stuck_threshold=30, events=view)
    events = document["events"]
    assert events["up"] is True
    assert events["live"] == {"active": 4, "stuck": 1, "without_ttl": 0, "oldest_age_seconds": 31.5}
    assert events["counters"] == {
        "acquisitions": 12, "renewals": 3, "released": 7, "expired": 2, "evicted": 1,
        "received": 40, "reconnects": 1, "corrections": 1,
    }  # fmt: skip
    assert [end["key"] for end in events["recent_ends"]] == [
        "lock:appointment:<i>",  # newest first
        "lock:appointment:old",
    ]
    assert events["recent_ends"][0]["hold_seconds"] is None
    json.dumps(document)  # all of it is JSON

    table = lock_table(document)
    assert "events live; since start 12 acquired, 7 released, 2 expired, 1 evicted" in table
    assert "evicted: lock:appointment:<i> (held unknown)" in table
    page = status_page(document)
    assert "lock:appointment:&lt;i&gt;" in page
    assert "<i>" not in page
    assert 'data-count="active"><b>4</b>' in page  # the tiles show the live counts
    assert 'data-count="stuck"><b>1</b>' in page
    assert "The counts above are live." in page


def test_while_events_are_live_the_counts_are_now_and_ended_locks_are_left_out() -> None:
    """/metrics says 2 stuck now (a lock crossed the threshold since the pass), and EVIL was
    evicted since: the table, the page and `locks --from`'s exit code agree with /metrics."""
    status = EventsStatus("auto", "live", None, (("redis:6379", "up"),), True, reconnects=0)
    view = EventsView(status, LiveCounts(2, 2, 0, 45.0), event_counters(), frozenset({EVIL.key}))
    state = MonitorState(redis_up=True, snapshot=SNAPSHOT, nodes=NODES)
    document = status_document(state, TARGET, "standalone", NOW, stuck_threshold=30, events=view)
    assert [lock["key"] for lock in document["locks"]] == [FRESH.key]
    assert document["pass"]["stuck"] == 1  # the pass's own figures are kept as they were
    table = lock_table(document).splitlines()
    assert table[-2] == f"2 active, 2 stuck, 0 without TTL ({TARGET})"
    assert table[-1] == (
        "counts now, from keyspace events; the locks listed are from the pass 2 s ago, "
        "without those that ended since"
    )
    assert exit_code(document) == EXIT_STUCK
    assert exit_code(document | {"events": None}) == EXIT_STUCK  # the pass: 1 stuck
    page = status_page(document)
    assert "<title>lock-monitor: 2 stuck, 2 active</title>" in page
    assert "lock:appointment:&lt;script&gt;" not in page
    assert "the locks listed are from the pass" in page


def test_a_lock_that_became_stuck_since_the_pass_sets_the_exit_code() -> None:
    status = EventsStatus("auto", "live", None, (("redis:6379", "up"),), True, reconnects=0)
    calm = Snapshot(NOW - 2, 0.25, 1, 1, 0, 0, (FRESH,))
    state = MonitorState(redis_up=True, snapshot=calm, nodes=NODES)
    for live_stuck, code in [(0, 0), (1, EXIT_STUCK)]:
        view = EventsView(status, LiveCounts(1, live_stuck, 0, 31.0), event_counters())
        document = status_document(
            state, TARGET, "standalone", NOW, stuck_threshold=30, events=view
        )
        assert exit_code(document) == code
        assert lock_table(document).splitlines()[-2].startswith(f"1 active, {live_stuck} stuck")


# Terminal escapes a key, a value or an error text could carry: clear screen, window title,
# an OSC 8 link, a CSI as one C1 byte, a fake row via CR/LF, DEL, and a right-to-left override.
HOSTILE = "\x1b[2J\x1b]0;owned\x07\x1b]8;;http://x\x1b\\link\x9b31m\r\nfake row\x7f\u202eabc"
CONTROLS = [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]] + ["\u202e", "\u2028"]


def test_printable_shows_every_control_character_as_an_escape() -> None:
    shown = printable(HOSTILE)
    assert not any(char in shown for char in CONTROLS)
    assert shown == (
        "\\x1b[2J\\x1b]0;owned\\x07\\x1b]8;;http://x\\x1b\\link\\x9b31m"
        "\\r\\nfake row\\x7f\\u202eabc"
    )
    for text in ["lock:appointment:42", "1764180000000:api-7f9c", "réservation ✓ 予約", ""]:
        assert printable(text) == text  # printable text, whatever the script, is left alone


HOSTILE_LOCK = Lock("lock:" + HOSTILE, HOSTILE, "string", 5.0, 40.0, "value", True)


def test_table_and_page_never_print_raw_control_characters() -> None:
    state = MonitorState(
        redis_up=True,
        snapshot=Snapshot(NOW - 2, 0.25, 1, 1, 1, 0, (HOSTILE_LOCK,)),
        last_error="ResponseError: " + HOSTILE,
        nodes=((HOSTILE, True),),
    )
    document = status_document(state, TARGET, "standalone", NOW, stuck_threshold=30)
    table, page = lock_table(document), status_page(document)
    assert len(table.splitlines()) == 3  # header, the one lock, the counts: no fake row
    assert not any(char in table.replace("\n", "") for char in CONTROLS)
    assert not any(char in page.replace("\n", "") for char in CONTROLS)
    assert "\\x1b]0;owned\\x07" in table
    assert "\\x1b]0;owned\\x07" in page
    assert document["locks"][0]["key"] == HOSTILE_LOCK.key  # the JSON stays exact


def test_the_events_lines_never_print_raw_control_characters() -> None:
    """A key that ended and a server's error text, in the table, the page and `locks --from`."""
    counters = event_counters(RecentEnd("lock:" + HOSTILE, "evicted", 2.0, NOW - 1))
    status = EventsStatus("auto", "down", "ConnectionError: " + HOSTILE, (), True, reconnects=0)
    view = EventsView(status, None, counters)
    state = MonitorState(redis_up=True, snapshot=SNAPSHOT, nodes=NODES)
    document = status_document(state, TARGET, "standalone", NOW, stuck_threshold=30, events=view)
    table, page = lock_table(document), status_page(document)
    assert not any(char in table.replace("\n", "") for char in CONTROLS)
    assert not any(char in page.replace("\n", "") for char in CONTROLS)
    assert "evicted: lock:\\x1b[2J" in table
    assert "(ConnectionError: \\x1b[2J" in table
    assert "lock:\\x1b[2J" in page
    assert document["events"]["recent_ends"][0]["key"] == "lock:" + HOSTILE  # JSON exact
