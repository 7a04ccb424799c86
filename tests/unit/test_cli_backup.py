"""`lock-monitor backup` and `restore`: their options and help."""

from lock_monitor.config import RESTORE_MAX_SIZE_FACTOR, RESTORE_MIN_MAX_SIZE
from tests.unit.conftest import RunCli


def test_restore_help_states_the_max_size_default(run_cli: RunCli) -> None:
    code, out, _ = run_cli("restore", "sqlite", "--help")
    assert code == 0
    default = (
        f"Default: {RESTORE_MAX_SIZE_FACTOR} times the size of --db, "
        f"at least {RESTORE_MIN_MAX_SIZE >> 30}G."
    )
    assert default in " ".join(out.split())
    assert "LOCK_MONITOR_MAX_SIZE" in out
