"""`lock-monitor locks`: its own options read the environment like every other option; the
daemon's URL for --from, and the --watch screen."""

import os
import shutil

import pytest

from lock_monitor.cli.locks import daemon_url, locks, screen


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("env", "as_json", "stuck_only"),
    [
        ({}, False, False),
        ({"LOCK_MONITOR_JSON": "true"}, True, False),
        ({"LOCK_MONITOR_STUCK": "1"}, False, True),
        ({"LOCK_MONITOR_JSON": "false", "LOCK_MONITOR_STUCK": "yes"}, False, True),
    ],
)
def test_json_and_stuck_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], as_json: bool, stuck_only: bool
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with locks.make_context("locks", []) as ctx:
        assert (ctx.params["as_json"], ctx.params["stuck_only"]) == (as_json, stuck_only)


@pytest.mark.parametrize(
    ("given", "read"),
    [
        ("http://lm:9150", "http://lm:9150/locks"),
        ("http://lm:9150/", "http://lm:9150/locks"),
        ("https://lm/monitor/locks", "https://lm/monitor/locks"),
    ],
)
def test_from_reads_the_daemons_locks_document(given: str, read: str) -> None:
    with locks.make_context("locks", []) as ctx:
        assert daemon_url(ctx, locks.params[0], given) == read


def test_watch_cuts_the_table_to_the_terminal_keeping_stuck_locks_and_the_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutil, "get_terminal_size", lambda: os.terminal_size((100, 10)))
    lock = {"key": "", "value": "v", "ttl_seconds": None, "age_seconds": 1.0}
    document = {
        "target": "redis://r:6379/0",
        "redis_up": True,
        "pass": {"active": 6, "stuck": 1, "without_ttl": 6},
        "locks": [lock | {"key": f"k{i}", "stuck": i == 5} for i in range(6)],
    }
    lines = screen(document, "Every 2s: ...").splitlines()
    assert len(lines) <= 10
    assert [line.split()[0] for line in lines[2:6]] == ["KEY", "k5", "k0", "k1"]
    assert lines[6:] == ["… 3 more", "6 active, 1 stuck, 6 without TTL (redis://r:6379/0)"]
