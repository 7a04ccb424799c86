import json
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from wsgiref.util import setup_testing_defaults

import pytest
from prometheus_client.parser import text_string_to_metric_families

import lock_monitor
from lock_monitor.events import EventsStatus, EventsView
from lock_monitor.livecounts import LiveCounts
from lock_monitor.liveset import LiveSet
from lock_monitor.monitor import MonitorState
from lock_monitor.snapshot import Snapshot
from lock_monitor.web import readiness
from tests.unit.webapps import NOW, UP, make_app, snapshot


def call(
    state: MonitorState,
    path: str,
    alive: bool = True,
    method: str = "GET",
    query: str = "",
    events: EventsView | None = None,
) -> tuple[str, dict[str, str], str]:
    app = make_app(state, alive, events)
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": method, "QUERY_STRING": query}
    setup_testing_defaults(environ)
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        captured["status"], captured["headers"] = status, dict(headers)

    body = b"".join(app(environ, start_response)).decode()
    return captured["status"], captured["headers"], body


def test_readiness_rules() -> None:
    assert readiness(MonitorState(), 5, NOW) == "no successful pass yet"
    assert readiness(MonitorState(redis_up=True, snapshot=snapshot(14)), 5, NOW) is None
    late = readiness(MonitorState(redis_up=False, snapshot=snapshot(16), last_error="boom"), 5, NOW)
    assert late is not None
    assert "16.0s ago" in late
    assert "boom" in late


def test_readiness_never_outlasts_the_stale_alert() -> None:
    """A long pass and the longest paced wait: ready for 3 such cycles would be 5 minutes."""
    paced = MonitorState(redis_up=True, snapshot=snapshot(106), delay_seconds=60, paced=True)
    late = readiness(replace(paced, snapshot=Snapshot(NOW - 106, 40, 1, 1, 1, 1, ())), 5, NOW)
    assert late is not None
    assert "limit 105.0s" in late
    assert readiness(MonitorState(redis_up=True, snapshot=snapshot(400)), 300, NOW) is None


def test_readiness_allows_for_pacing() -> None:
    paced = MonitorState(redis_up=True, snapshot=snapshot(50), delay_seconds=20, paced=True)
    assert readiness(paced, 5, NOW) is None


@pytest.mark.parametrize(
    ("alive", "status"), [(True, "200 OK"), (False, "503 Service Unavailable")]
)
def test_healthz_follows_the_loop(alive: bool, status: str) -> None:
    assert call(MonitorState(), "/healthz", alive=alive)[0] == status


def test_readyz_says_why() -> None:
    status, _, body = call(MonitorState(redis_up=False, last_error="refused"), "/readyz")
    assert status.startswith("503")
    assert "refused" in body


def test_status_page_is_html() -> None:
    status, headers, body = call(MonitorState(redis_up=True, snapshot=snapshot(1)), "/")
    assert status == "200 OK"
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert "&lt;script&gt;" in body  # rendered by page.status_page, escaped


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("page.js", "text/javascript; charset=utf-8"), ("page.css", "text/css; charset=utf-8")],
)
def test_the_page_script_and_style_are_served_from_the_package(
    name: str, content_type: str
) -> None:
    status, headers, body = call(MonitorState(), f"/static/{name}")
    assert (status, headers["Content-Type"]) == ("200 OK", content_type)
    assert body == (Path(lock_monitor.__file__).parent / "static" / name).read_text()
    assert call(MonitorState(), "/static/../web.py")[0].startswith("404")


def test_locks_json() -> None:
    _, headers, body = call(MonitorState(redis_up=True, snapshot=snapshot(1)), "/locks")
    document = json.loads(body)
    assert headers["Content-Type"] == "application/json"
    assert document["pass"]["stuck"] == 1
    assert document["locks"][0]["key"] == "lock:appointment:<script>"
    assert document["locks"][0]["ttl_seconds"] is None


def test_metrics_and_unknown_paths() -> None:
    status, _, body = call(MonitorState(redis_up=True, snapshot=snapshot(1)), "/metrics")
    assert status == "200 OK"
    assert "stuck_locks_count 1.0" in body
    assert call(MonitorState(), "/nope")[0].startswith("404")


def families(text: str) -> dict[str, list[str]]:
    """Family name -> its sample names, parsed by prometheus_client."""
    return {
        family.name: [sample.name for sample in family.samples]
        for family in text_string_to_metric_families(text)
    }


# Keyspace events followed and live: their metrics are in every scrape.
LIVE_EVENTS = EventsView(
    EventsStatus("auto", "live", None, (("redis:6379", "up"),), ever_live=True, reconnects=0),
    LiveCounts(1, 1, 1, 40.0),
    LiveSet(stuck_threshold=30).counters(),
)


def test_metrics_can_be_asked_for_by_name_as_prometheus_clients_do() -> None:
    """`name[]=` as a federating Prometheus or a script sends it (URL-encoded brackets): every
    family a full scrape holds can be asked for alone, and several together."""
    everything = families(call(UP, "/metrics", events=LIVE_EVENTS)[2])
    assert {
        "stuck_locks_count",
        "lock_monitor_scans",
        "process_resident_memory_bytes",
        "lock_monitor_events_up",
        "lock_monitor_lock_releases",
        "lock_monitor_lock_hold_seconds",
    } <= set(everything)
    for family, samples in everything.items():
        for sample in samples:
            query = urlencode({"name[]": sample})
            alone = families(call(UP, "/metrics", query=query, events=LIVE_EVENTS)[2])
            assert list(alone) == [family], sample
    query = urlencode([("name[]", "active_locks_count"), ("name[]", "lock_monitor_build_info")])
    assert set(families(call(UP, "/metrics", query=query)[2])) == {
        "active_locks_count",
        "lock_monitor_build_info",
    }


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"])
@pytest.mark.parametrize("path", ["/", "/metrics", "/healthz", "/nope"])
def test_other_methods_are_not_allowed(method: str, path: str) -> None:
    status, headers, _ = call(UP, path, method=method)
    assert status == "405 Method Not Allowed"
    assert headers["Allow"] == "GET, HEAD"
    assert headers["X-Frame-Options"] == "DENY"
