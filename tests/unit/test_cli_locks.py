"""`lock-monitor locks`: its own options read the environment like every other option; the
daemon's URL for --from."""

import pytest

from lock_monitor.cli.locks import daemon_url, locks


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
