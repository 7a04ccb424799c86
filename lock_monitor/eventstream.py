"""One node's keyspace events, in the order it published them, applied to the live set."""

from __future__ import annotations

from collections.abc import Sequence

from lock_monitor.liveset import LiveSet
from lock_monitor.passlocks import KEY_KEPT, bounded


class Stream:
    """One node's events in the order it published them.

    Order matters: `SET k v PX 30000 NX` publishes `set` then `expire` (one acquisition), a
    RENAME publishes `rename_from` then `rename_to`. Each node gets its own stream, so events
    of two nodes never interleave here.
    """

    def __init__(self, live: LiveSet, prefix: bytes) -> None:
        self.live = live
        self.skip = len(prefix)
        self.received = 0
        self._after_set: bytes | None = None  # the key whose own EXPIRE may come next
        self._renamed: tuple[float, bool, bool] | None = None  # a lock renamed away

    def apply(self, messages: Sequence[Sequence[bytes]]) -> None:
        """Apply a batch of raw replies (`pmessage`, pattern, channel, event); skip others."""
        live = self.live
        at = live.redis_now()
        skip = self.skip
        applied = 0
        with live.lock:
            for message in messages:
                if len(message) == 4 and message[0] == b"pmessage":
                    key = message[2][skip:]
                    self._event(key if len(key) <= KEY_KEPT else bounded(key), message[3], at)
                    applied += 1
            live.received += applied
        self.received += applied

    def _event(self, key: bytes, event: bytes, at: float) -> None:
        live = self.live
        after_set, self._after_set = self._after_set, None
        renamed, self._renamed = self._renamed, None
        if event == b"set":
            live.written(key, at, whole=True)
            self._after_set = key
        elif event == b"expire":
            live.expire_set(key, renewal=key != after_set)
        elif event in (b"del", b"unlink"):
            live.end(key, "released", at)
        elif event == b"expired":
            live.end(key, "expired", at)
        elif event == b"evicted":
            live.end(key, "evicted", at)
        elif event in (b"hset", b"hincrby"):
            if live.written(key, at, whole=False):
                self._after_set = key
        elif event == b"persist":
            live.persist(key)
        elif event == b"rename_from":
            self._renamed = live.take(key)
        elif event == b"rename_to":
            live.put(key, renamed, at)
