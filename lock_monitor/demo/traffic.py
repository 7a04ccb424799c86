"""Booking traffic for the demo: appointments booked the way the backend books them, with the
faults operators meet (holders that crash, a stuck worker that keeps renewing a dead lock,
locks without a TTL, and cache writes that make a small Redis evict held locks)."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import redis

from lock_monitor.config import LOCK_KEY_PREFIX

LOCK_TTL_MS = 30_000  # the backend's PX 30000


@dataclass
class TrafficStats:
    booked: int = 0
    contended: int = 0  # SET NX refused because the slot was held
    released: int = 0
    crashed: int = 0  # left to expire after 30 s
    renewed_by_stuck_worker: int = 0
    without_ttl: int = 0
    noise_bursts: int = 0  # cache writes until Redis evicted keys (held locks among them)


@dataclass
class _Fault:
    """A lock kept past its time: renewed by a stuck worker, or taken without a TTL."""

    key: str
    renewing: bool  # True: PEXPIREd every RENEW_EVERY s; False: no TTL, DELeted at `until`
    until: float  # monotonic time when the worker gives up / an operator clears it
    next_renewal: float = 0.0


@dataclass
class Traffic:
    """Booking traffic in background threads, shaped to exercise every metric.

    Workers book a random slot (most bookings go to a few popular slots, so SET NX meets
    held locks and retries), hold it a moment and DEL it; a share of them crash and leave
    the lock to its TTL. A separate thread plays the faults that make locks stuck.
    """

    client: redis.Redis
    slots: int = 300
    workers: int = 6
    crash_share: float = 0.05
    hot_slots: int = 20
    hot_share: float = 0.7
    max_renewing: int = 4
    max_without_ttl: int = 3
    log: Any = None
    stats: TrafficStats = field(default_factory=TrafficStats)

    RENEW_EVERY = 10.0  # a Redisson-like watchdog renews a 30 s lock every 10 s
    RETRIES = 5
    NOISE_EVERY = (15.0, 35.0)  # seconds between cache bursts; the first within 15 s
    NOISE_VALUE = b"x" * 4096
    NOISE_TTL_MS = 3000  # cache entries go soon: at the next burst the idlest keys are locks
    NOISE_LIMIT = 5000  # keys per burst at most, whatever the server's memory
    # Keys a burst makes Redis evict. Bookings are short, and a lock whose value the monitor
    # has just read (a new one, or one becoming stuck: GETRANGE marks it used) ties with a
    # fresh cache entry on Redis' one-second LRU clock: one eviction can miss every lock, a
    # few dozen nearly never do.
    NOISE_EVICTIONS = 30

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._stats_lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._guard, args=(self._book, i), name=f"traffic-{i}")
            for i in range(self.workers)
        ]
        self._threads.append(
            threading.Thread(
                target=self._guard, args=(self._faults, self.workers), name="traffic-faults"
            )
        )
        self._threads.append(
            threading.Thread(
                target=self._guard, args=(self._noise, self.workers + 1), name="traffic-noise"
            )
        )

    def start(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join()

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _count(self, name: str) -> None:
        with self._stats_lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)

    def _guard(self, body: Any, number: int) -> None:
        """Run one thread's loop; a lost Redis ends the traffic with one log line."""
        try:
            body(random.Random(number), number)
        except redis.RedisError as exc:
            if not self._stop.is_set() and self.log is not None:
                self.log.error("traffic_stopped", error=f"{type(exc).__name__}: {exc}")

    def _slot(self, rng: random.Random) -> str:
        hot = rng.random() < self.hot_share
        return LOCK_KEY_PREFIX + str(rng.randrange(self.hot_slots if hot else self.slots))

    def _take(self, rng: random.Random, holder: str, ttl: bool = True) -> str | None:
        """SET NX the way the backend does, retrying a busy slot a few times."""
        for _ in range(self.RETRIES):
            key = self._slot(rng)
            value = f"{int(time.time() * 1000)}:{holder}"
            if self.client.set(key, value, px=LOCK_TTL_MS if ttl else None, nx=True):
                self._count("booked")
                return key
            self._count("contended")
            if self._stop.wait(rng.uniform(0.01, 0.1)):
                return None
        return None

    def _book(self, rng: random.Random, number: int) -> None:
        booking = 0
        while not self._stop.is_set():
            booking += 1
            key = self._take(rng, f"worker-{number}/booking-{booking}")
            if key is not None and rng.random() < self.crash_share:
                self._count("crashed")  # the holder died: nobody DELs, the TTL will
            elif key is not None:
                if self._stop.wait(rng.uniform(0.05, 1.5)):
                    return
                self.client.delete(key)
                self._count("released")
            self._stop.wait(rng.uniform(0.05, 0.3))

    def _faults(self, rng: random.Random, number: int) -> None:
        """Every few seconds a new fault, alternating kinds, the first ones right away."""
        faults: list[_Fault] = []
        next_fault, renewing = time.monotonic() + 0.5, True
        while not self._stop.wait(0.5):
            now = time.monotonic()
            if now >= next_fault:
                self._start_fault(rng, faults, renewing, now)
                renewing = not renewing
                next_fault = now + (1.0 if len(faults) < 2 else rng.uniform(5, 15))
            for fault in list(faults):
                if now >= fault.until:
                    faults.remove(fault)
                    if not fault.renewing:
                        self.client.delete(fault.key)  # an operator clears the leaked lock
                elif fault.renewing and now >= fault.next_renewal:
                    self.client.pexpire(fault.key, LOCK_TTL_MS)  # the value, so its age, stays
                    fault.next_renewal = now + self.RENEW_EVERY

    def _start_fault(
        self, rng: random.Random, faults: list[_Fault], renewing: bool, now: float
    ) -> None:
        limit = self.max_renewing if renewing else self.max_without_ttl
        if sum(fault.renewing == renewing for fault in faults) >= limit:
            return
        key = self._take(rng, "stuck-worker" if renewing else "no-ttl-job", ttl=renewing)
        if key is None:
            return
        self._count("renewed_by_stuck_worker" if renewing else "without_ttl")
        lifetime = rng.uniform(40, 120) if renewing else rng.uniform(60, 180)
        faults.append(_Fault(key, renewing, now + lifetime, now + self.RENEW_EVERY))

    def _noise(self, rng: random.Random, number: int) -> None:
        """Now and then a burst of short-lived cache entries, until Redis (at maxmemory, with
        allkeys-lru) evicts: the keys idle longest then are held locks, so a few are evicted."""
        written, wait = 0, rng.uniform(*self.NOISE_EVERY) / 2
        while not self._stop.wait(wait):
            wait = rng.uniform(*self.NOISE_EVERY)
            before = self._evicted()
            for _ in range(0, self.NOISE_LIMIT, 50):
                pipe = self.client.pipeline(transaction=False)
                for _ in range(50):
                    pipe.set(f"cache:demo:{written}", self.NOISE_VALUE, px=self.NOISE_TTL_MS)
                    written += 1
                pipe.execute()
                if self._evicted() >= before + self.NOISE_EVICTIONS or self._stop.is_set():
                    break
            self._count("noise_bursts")

    def _evicted(self) -> int:
        return int(self.client.info("stats")["evicted_keys"])
