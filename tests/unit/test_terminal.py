"""The --watch screen: the table fit to the terminal, nothing wrapped, nothing scrolled."""

import os

import pytest

from lock_monitor.terminal import fit, screen


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
