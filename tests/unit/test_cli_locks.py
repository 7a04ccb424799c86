"""`lock-monitor locks`: its own options read the environment like every other option; the
daemon's URL for --from, and the --watch screen."""

import os

import pytest

from lock_monitor.cli.locks import daemon_url, fit, locks, screen


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


def test_watch_fits_the_table_to_the_terminal_keeping_stuck_locks_and_the_counts() -> None:
    lock = {"key": "", "value": "v", "ttl_seconds": None, "age_seconds": 1.0}
    document = {
        "target": "redis://r:6379/0",
        "redis_up": True,
        "pass": {"active": 6, "stuck": 1, "without_ttl": 6},
        "locks": [lock | {"key": f"k{i}", "stuck": i == 5} for i in range(5)]
        + [lock | {"key": "k5", "stuck": True, "value": "x" * 100 + "界" * 50}],
    }
    lines = screen(document, "Every 2s: ...", os.terminal_size((60, 9))).splitlines()
    assert len(lines) == 9
    assert [line.split()[0] for line in lines[2:7]] == ["KEY", "k5", "k0", "k1", "k2"]
    assert lines[7:] == ["… 2 more", "6 active, 1 stuck, 6 without TTL (redis://r:6379/0)"]
    assert lines[3].endswith("x…")  # cut to the width, not wrapped
    assert max(map(len, lines)) == 60


@pytest.mark.parametrize(
    ("line", "columns", "cut"),
    [
        ("abc", 3, "abc"),
        ("abcd", 3, "ab…"),
        ("界界界", 6, "界界界"),
        ("界界界", 5, "界界…"),
        ("e\u0301e\u0301e\u0301", 3, "e\u0301e\u0301e\u0301"),  # accents take no cell
        ("e\u0301e\u0301e\u0301x", 3, "e\u0301e\u0301…"),
    ],
)
def test_a_line_is_cut_to_the_terminal_cells_it_takes(line: str, columns: int, cut: str) -> None:
    assert fit(line, columns) == cut
