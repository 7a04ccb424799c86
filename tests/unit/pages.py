"""Locks as the scanner hands them over, built by hand for the unit tests."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

from lock_monitor.scanner import Page

NOW = 1_800_000_000.0  # Redis TIME of the passes here


class RawLock(NamedTuple):
    key: bytes
    value: bytes | None  # None: not a string
    pttl_ms: int = 30_000  # -1: no TTL
    kind: str = "string"
    now: float = NOW


def pages_of(locks: Iterable[RawLock]) -> Iterator[Page]:
    """`locks` in the pages the scanner would yield: strings apart from other types (which
    it reads in a round trip of their own), one page per Redis time."""
    groups: dict[tuple[float, bool], list[RawLock]] = {}
    for lock in locks:
        groups.setdefault((lock.now, lock.value is None), []).append(lock)
    for (now, typed), group in groups.items():
        yield Page(
            now,
            now,
            [lock.key for lock in group],
            [lock.value for lock in group],
            [lock.pttl_ms for lock in group],
            [lock.kind for lock in group] if typed else None,
            0,
        )
