"""The locks a pass hands to the live set, when keyspace events are followed.

A pass may read a million locks. Kept as a list of tuples, each full collection of the
garbage collector walked that list, a cache miss per lock, while scrapes waited (see
docs/performance.md); kept here in flat arrays (the keys end to end in one buffer), the
collector has nothing to walk and a lock costs far less memory. Tuples are built back a
slice at a time, as the reconcile reads them.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterator, Sequence
from itertools import accumulate, islice, pairwise
from typing import overload

# A lock as a pass read it: key (`bounded`), acquisition time (Redis time), has a TTL, and
# whether that time is the holder's own stamp (rather than when it was first seen).
PassLock = tuple[bytes, float, bool, bool]
_HAS_TTL, _STAMPED = 1, 2
KEY_KEPT = 200  # bytes of a key kept as is (as many as are shown); longer: its start and a digest
DIGEST_BYTES = 16


def bounded(key: bytes) -> bytes:
    """The key as the live set keeps it (and a pass hands it over): memory must not follow
    the size of a hostile key name."""
    if len(key) <= KEY_KEPT:
        return key
    return key[:KEY_KEPT] + hashlib.blake2b(key, digest_size=DIGEST_BYTES).digest()


class PassLocks(Sequence[PassLock]):
    """A pass's locks, in the order read, their keys `bounded`."""

    def __init__(self) -> None:
        self._keys = bytearray()
        self._ends = array("Q", [0])  # where each key ends in _keys (after the first 0)
        self._times = array("d")
        self._flags = bytearray()

    def extend(
        self,
        keys: Sequence[bytes],
        times: Sequence[float],
        ttls: Sequence[bool],
        stamps: Sequence[bool],
    ) -> None:
        """A page's locks, as columns: one copy each, no object per lock kept."""
        if max(map(len, keys), default=0) > KEY_KEPT:
            keys = [bounded(key) for key in keys]
        self._keys += b"".join(keys)
        self._ends.extend(islice(accumulate(map(len, keys), initial=self._ends[-1]), 1, None))
        self._times.extend(times)
        self._flags.extend([ttl | stamped << 1 for ttl, stamped in zip(ttls, stamps, strict=True)])

    def __len__(self) -> int:
        return len(self._times)

    @overload
    def __getitem__(self, index: int) -> PassLock: ...
    @overload
    def __getitem__(self, index: slice) -> list[PassLock]: ...
    def __getitem__(self, index: int | slice) -> PassLock | list[PassLock]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                return self._run(start, stop)
            return [self._run(i, i + 1)[0] for i in range(start, stop, step)]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        start = index % len(self)
        return self._run(start, start + 1)[0]

    def __iter__(self) -> Iterator[PassLock]:
        return iter(self._run(0, len(self)))

    def _run(self, start: int, stop: int) -> list[PassLock]:
        """Locks `start` to `stop`: their keys copied out at once, then a tuple each."""
        if start >= stop:
            return []
        ends = self._ends[start : stop + 1].tolist()
        base = ends[0]
        blob = bytes(self._keys[base : ends[-1]])
        keys = [blob[begin - base : end - base] for begin, end in pairwise(ends)]
        flags = self._flags[start:stop]
        ttls = map(bool, map(_HAS_TTL.__and__, flags))
        stamps = map(bool, map(_STAMPED.__and__, flags))
        return list(zip(keys, self._times[start:stop].tolist(), ttls, stamps, strict=True))
