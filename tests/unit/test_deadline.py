"""A pass's limits: its deadline, enforced even on a socket that never times out, and its caps
on SCAN pages and keys."""

from __future__ import annotations

import socket
import time

import pytest

from lock_monitor import config
from lock_monitor.deadline import PassBudget, PassLimitExceeded


def test_the_deadline_is_checked_between_round_trips() -> None:
    budget = PassBudget(0.05)
    budget.check()
    time.sleep(0.06)  # the deadline itself is what is tested: it must have passed
    with pytest.raises(PassLimitExceeded, match=r"longer than --pass-timeout \(0.05s\)"):
        budget.check()
    assert budget.exceeded == "the pass took longer than --pass-timeout (0.05s)"


def test_a_read_that_would_wait_forever_is_woken_at_the_deadline() -> None:
    """No socket timeout set: only the watchdog can end this read."""
    budget = PassBudget(0.3)
    ours, theirs = socket.socketpair()
    with ours, theirs, budget.watching(ours):
        started = time.monotonic()
        assert ours.recv(1) == b""  # hung up on
        assert 0.25 < time.monotonic() - started < 2
    assert budget.exceeded is not None


def test_leaving_in_time_disarms_the_watchdog() -> None:
    budget = PassBudget(0.1)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        with budget.watching(ours):
            pass
        theirs.sendall(b"x")
        time.sleep(0.2)  # past the deadline: the socket must still work
        assert ours.recv(1) == b"x"
    assert budget.exceeded is None


def test_pages_and_keys_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "MAX_PAGES_PER_PASS", 3)
    monkeypatch.setattr(config, "MAX_KEYS_PER_PASS", 10)
    pages = PassBudget(60)
    for _ in range(3):
        pages.count_page(0)
    with pytest.raises(PassLimitExceeded, match="more than 3 pages"):
        pages.count_page(0)
    keys = PassBudget(60)
    keys.count_page(10)
    with pytest.raises(PassLimitExceeded, match="more than 10 keys match the pattern"):
        keys.count_page(1)


@pytest.mark.parametrize(
    ("interval", "timeout"), [(0.2, 45.0), (5.0, 45.0), (60.0, 45.0), (75.0, 30.0), (3600, 30.0)]
)
def test_the_default_pass_timeout_leaves_room_for_the_longest_wait(
    interval: float, timeout: float
) -> None:
    assert config.default_pass_timeout(interval) == timeout
    assert config.ScanSettings(interval=interval).deadline_seconds == timeout
    if interval <= config.MAX_PACED_WAIT_SECONDS:  # then a wait and a pass fit before the alert
        longest_gap = config.MAX_PACED_WAIT_SECONDS + timeout + config.SCRAPE_ALLOWANCE_SECONDS
        assert longest_gap <= config.STALE_ALERT_SECONDS
    assert config.ScanSettings(pass_timeout=7.5).deadline_seconds == 7.5
