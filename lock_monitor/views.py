"""How a snapshot is shown to people and scripts: the lock table (and, next, JSON and HTML)."""

from __future__ import annotations

from lock_monitor.locks import Lock


def format_table(rows: list[Lock]) -> str:
    header = ("KEY", "AGE", "TTL", "STUCK", "VALUE")
    lines = [header] + [
        (
            lock.key,
            f"{lock.age_seconds:.1f}s",
            "none" if lock.ttl_seconds is None else f"{lock.ttl_seconds:.1f}s",
            "yes" if lock.stuck else "no",
            lock.value,
        )
        for lock in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False))
        + "  "
        + line[-1]
        for line in lines
    )
