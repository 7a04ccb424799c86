"""`lock-monitor backup` and `restore`: their options and help, and what they import."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lock_monitor.backup.files import BackupError
from lock_monitor.config import RESTORE_MAX_SIZE_FACTOR, RESTORE_MIN_MAX_SIZE
from tests.servers import ROOT
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


# Every module outside lock_monitor.backup (the CLI with all its commands, the daemon `run`
# starts, the demo), then what of the backup package came along.
IMPORT_ALL_BUT_BACKUP = """
import importlib, pkgutil, sys
import lock_monitor

def import_all(package):
    for module in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        if module.name not in ("lock_monitor.backup", "lock_monitor.__main__"):
            imported = importlib.import_module(module.name)
            if module.ispkg:
                import_all(imported)

import_all(lock_monitor)
assert {"lock_monitor.cli.backup", "lock_monitor.daemon"} <= sys.modules.keys()
print(sorted(name for name in sys.modules if name.startswith("lock_monitor.backup")))
"""


def test_run_and_the_rest_of_the_cli_never_import_the_backup_package() -> None:
    """The backup package is a second product: only the backup and restore commands load it."""
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL_BUT_BACKUP],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == "[]\n"


def test_sigterm_is_turned_into_an_error_only_while_a_command_runs(
    run_cli: RunCli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Run in-process (as here), a command gives SIGTERM back as it found it."""
    before = signal.getsignal(signal.SIGTERM)
    during = []

    def backup_sqlite(db: Path, dest: Path, keep_days: int) -> None:
        during.append(signal.getsignal(signal.SIGTERM))
        raise BackupError("stop here")

    monkeypatch.setattr("lock_monitor.backup.sqlite.backup_sqlite", backup_sqlite)
    code, _, err = run_cli("backup", "sqlite", "--db", __file__, "--dest", str(tmp_path))
    assert (code, err) == (1, "lock-monitor: error: stop here\n")
    (handler,) = during
    assert callable(handler)
    assert handler is not before
    assert signal.getsignal(signal.SIGTERM) is before
