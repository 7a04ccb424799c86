"""The `lock-monitor` group and `main`: help, version, and how every error is shown."""

import pytest

from lock_monitor import __version__
from tests.unit.conftest import RunCli


def test_version(run_cli: RunCli) -> None:
    code, out, _ = run_cli("--version")
    assert code == 0
    assert __version__ in out


@pytest.mark.parametrize("args", [[], ["backup"], ["restore"]])
def test_a_group_without_a_command_prints_plain_help(run_cli: RunCli, args: list[str]) -> None:
    code, out, err = run_cli(*args)
    assert (code, err) == (0, "")
    assert out.startswith(f"Usage: lock-monitor {' '.join(args)}".rstrip() + " [OPTIONS] COMMAND")
    assert "Commands:" in out


def test_an_unknown_command_is_still_a_usage_error(run_cli: RunCli) -> None:
    code, out, err = run_cli("serve")
    assert (code, out) == (2, "")
    assert err.startswith("lock-monitor: error: ")
    assert len(err.splitlines()) == 1
