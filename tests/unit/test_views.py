"""One view of a snapshot: the JSON document of /locks and `locks --json`, and the table and
the page rendered from it."""

from __future__ import annotations

import importlib
import json
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from click.testing import CliRunner

from lock_monitor.cli import cli
from lock_monitor.config import RedisSettings, ScanSettings
from lock_monitor.locks import Lock
from lock_monitor.metrics import build_registry
from lock_monitor.monitor import MonitorState
from lock_monitor.passes import PassResult
from lock_monitor.snapshot import Snapshot
from lock_monitor.stuck_log import StuckLocks
from lock_monitor.views import NO_TTL, lock_table, status_document, status_page
from lock_monitor.web import App

NOW = 1_800_000_000.0
TARGET = "redis://redis:6379/0"
EVIL = Lock("lock:appointment:<script>", "<b>x</b>", "string", None, 40.0, "value", True)
FRESH = Lock("lock:appointment:7", "1799999999000:api-7", "string", 29.0, 1.0, "value", False)
SNAPSHOT = Snapshot(NOW - 2, 0.25, 5, 2, 1, 1, (EVIL, FRESH))
NODES = (("redis:6379", True),)


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

    # The module, not the command of the same name that lock_monitor.cli exports.
    monkeypatch.setattr(importlib.import_module("lock_monitor.cli.locks"), "read_once", read_once)
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
        "target", "mode", "redis_up", "last_error", "nodes", "pass",
        "next_pass_delay_seconds", "pacing_active", "locks",
    }  # fmt: skip
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
    document = status_document(state, TARGET, "standalone", NOW)
    assert document["pass"] is None
    assert document["locks"] == []
    assert (document["redis_up"], document["next_pass_delay_seconds"]) == (False, 1.5)
    assert "No successful pass yet." in status_page(document)


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
    document = status_document(MonitorState(redis_up=True, snapshot=SNAPSHOT), TARGET, "x", NOW)
    assert f"<td>{NO_TTL}</td>" in status_page(document)
    assert f" {NO_TTL} " in lock_table(document)
    assert "no TTL" not in status_page(document) + lock_table(document)


def test_status_page_escapes_what_it_shows() -> None:
    state = MonitorState(
        redis_up=False,
        snapshot=SNAPSHOT,
        last_error="<img src=x>",
        nodes=(("<node>", False),),
    )
    page = status_page(status_document(state, TARGET, "standalone", NOW))
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page
    assert "&lt;img src=x&gt;" in page
    assert "&lt;node&gt;: DOWN" in page
    assert TARGET in page


def test_status_page_says_when_pacing_stretches_the_wait() -> None:
    paced = MonitorState(redis_up=True, snapshot=SNAPSHOT, delay_seconds=38.0, paced=True)
    page = status_page(status_document(paced, TARGET, "standalone", NOW))
    assert "Pacing" in page
    assert "38.0s" in page
    calm = MonitorState(redis_up=True, snapshot=SNAPSHOT, delay_seconds=5.0)
    assert "Pacing" not in status_page(status_document(calm, TARGET, "standalone", NOW))
