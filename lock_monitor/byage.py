"""Held locks in order of acquisition time, for the stuck count and the oldest lock."""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from operator import itemgetter

# A held lock in acquisition order: (acquisition time, key), the key and the time being the
# very objects of `LiveSet.held`, so that each is kept once.
Entry = tuple[float, bytes]
# Entries per block of `ByAge`: a block is split past twice this, merged below a quarter.
BLOCK = 512
_time_of = itemgetter(0)


class ByAge:
    """Entries kept in order of acquisition time: a sorted list of short sorted blocks.

    Adding or removing a lock is a bisection and a short move within one block; counting the
    locks acquired before a time is a bisection and a sum over block lengths. A heap would
    need lazy deletion, whose garbage grows with the rate of short locks, not their number.
    """

    def __init__(self) -> None:
        self._blocks: list[list[Entry]] = []
        self._lasts: list[Entry] = []  # the last (newest) entry of each block

    def add(self, entry: Entry) -> None:
        blocks, lasts = self._blocks, self._lasts
        if not blocks:
            blocks.append([entry])
            lasts.append(entry)
            return
        if entry > lasts[-1]:  # the usual: acquired now, so the newest
            i = len(blocks) - 1
            block = blocks[i]
            block.append(entry)
        else:
            i = bisect_left(lasts, entry)
            block = blocks[i]
            insort(block, entry)
        lasts[i] = block[-1]
        if len(block) > 2 * BLOCK:
            blocks[i : i + 1] = [block[:BLOCK], block[BLOCK:]]
            lasts[i : i + 1] = [block[BLOCK - 1], block[-1]]

    def find(self, entry: Entry) -> Entry:
        """The entry kept that equals `entry` (which must be there)."""
        block = self._blocks[bisect_left(self._lasts, entry)]
        return block[bisect_left(block, entry)]

    def remove(self, entry: Entry) -> Entry:
        """Remove the entry that equals `entry` (which must be there); the one that was kept."""
        blocks, lasts = self._blocks, self._lasts
        i = bisect_left(lasts, entry)
        block = blocks[i]
        j = bisect_left(block, entry)
        kept = block[j]
        del block[j]
        if not block:
            del blocks[i], lasts[i]
            return kept
        lasts[i] = block[-1]
        if len(block) < BLOCK // 4 and len(blocks) > 1:
            i = max(i, 1)  # merge with the block before it (or after, for the first)
            merged = blocks[i - 1] + blocks[i]
            halves = [merged] if len(merged) <= 2 * BLOCK else [merged[:BLOCK], merged[BLOCK:]]
            blocks[i - 1 : i + 1] = halves
            lasts[i - 1 : i + 1] = [half[-1] for half in halves]
        return kept

    def first(self) -> Entry | None:
        return self._blocks[0][0] if self._blocks else None

    def count_before(self, at: float) -> int:
        """How many entries have a time before `at`."""
        i = bisect_left(self._lasts, at, key=_time_of)
        before = sum(map(len, self._blocks[:i]))
        if i < len(self._blocks):
            before += bisect_left(self._blocks[i], at, key=_time_of)
        return before

    def after(self, entry: Entry | None, limit: int) -> list[Entry]:
        """Up to `limit` entries that come after `entry` (from the first when None), in order:
        a walk that resumes where it stopped however the blocks changed meanwhile."""
        blocks = self._blocks
        i = 0 if entry is None else bisect_right(self._lasts, entry)
        start = 0 if entry is None or i == len(blocks) else bisect_right(blocks[i], entry)
        found: list[Entry] = []
        while i < len(blocks) and len(found) < limit:
            found.extend(blocks[i][start : start + limit - len(found)])
            i, start = i + 1, 0
        return found
