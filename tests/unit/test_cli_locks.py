"""`lock-monitor locks`: its own options read the environment like every other option."""

import pytest

from lock_monitor.cli.locks import locks


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
