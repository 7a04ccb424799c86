"""The pure parts of SQLite backups; backups and restores themselves are in tests/integration/."""

from __future__ import annotations

from pathlib import Path

from lock_monitor.backup.sqlite import default_max_size


def test_restore_limit_defaults_to_ten_times_the_database_at_least_1g(tmp_path: Path) -> None:
    db = tmp_path / "database.db"
    assert default_max_size(db) == 1 << 30  # no database yet
    db.write_bytes(b"x" * 4096)
    assert default_max_size(db) == 1 << 30
    with db.open("r+b") as file:
        file.truncate(300 << 20)  # sparse: the size without the disk space
    assert default_max_size(db) == 3000 << 20
