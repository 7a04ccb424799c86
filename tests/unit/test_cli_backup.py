"""The backup package is a second product: only the backup and restore commands load it."""

from __future__ import annotations

import subprocess
import sys

from tests.servers import ROOT

# Every module outside lock_monitor.backup (the CLI with all its commands, the daemon `run`
# starts, the demo), then what of the backup package came along.
IMPORT_ALL_BUT_BACKUP = """
import importlib, pkgutil, sys
import lock_monitor, lock_monitor.cli
for package in (lock_monitor, lock_monitor.cli):
    for module in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        if module.name not in ("lock_monitor.backup", "lock_monitor.__main__"):
            importlib.import_module(module.name)
assert "lock_monitor.daemon" in sys.modules
print(sorted(name for name in sys.modules if name.startswith("lock_monitor.backup")))
"""


def test_run_and_the_rest_of_the_cli_never_import_the_backup_package() -> None:
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL_BUT_BACKUP],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == "[]\n"
