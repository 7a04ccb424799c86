"""Pages of locks through the tracker over successive passes: ages, stuck decisions, counts,
memory, and the locks a pass need not read again."""

import math
import random
import tracemalloc

import pytest

from lock_monitor.locks import Lock, classify
from lock_monitor.passlocks import PassLocks
from lock_monitor.scanner import Page
from lock_monitor.tracker import LockTracker, PageVerdict, unchanged
from tests.unit.pages import NOW, RawLock, pages_of


def raw(
    key: bytes, value: bytes | None, now: float = NOW, pttl: int = 20_000, kind: str = "string"
) -> RawLock:
    return RawLock(key, value, pttl, kind, now)


def read_all(
    tracker: LockTracker, *locks: RawLock, older_than: float = -math.inf
) -> list[PageVerdict]:
    """The pages of `locks` through the tracker (in one pass), in full unless asked otherwise."""
    return [
        tracker.add_page(page, "node", older_than, newly_stuck_wanted=len(locks))
        for page in pages_of(locks)
    ]


def read(tracker: LockTracker, *locks: RawLock, older_than: float = -math.inf) -> PageVerdict:
    [verdict] = read_all(tracker, *locks, older_than=older_than)
    return verdict


def one(tracker: LockTracker, lock: RawLock) -> Lock:
    [classified] = read(tracker, lock).older
    return classified


def test_age_from_the_value_and_stuck_past_the_threshold() -> None:
    tracker = LockTracker(stuck_threshold=30)
    young = one(tracker, raw(b"lock:a", b"%d" % ((NOW - 10) * 1000)))
    old = one(tracker, raw(b"lock:b", b"%d" % ((NOW - 45) * 1000)))
    assert (young.age_seconds, young.stuck, young.age_source) == (10, False, "value")
    assert old.age_seconds == pytest.approx(45)
    assert old.stuck


def test_exactly_at_the_threshold_is_not_stuck() -> None:
    lock = one(LockTracker(30), raw(b"k", b"%d" % ((NOW - 30) * 1000)))
    assert lock.age_seconds == 30
    assert not lock.stuck


def test_future_timestamps_give_age_zero() -> None:
    lock = one(LockTracker(30), raw(b"k", b"%d" % ((NOW + 3600) * 1000)))
    assert lock.age_seconds == 0
    assert not lock.stuck


def test_ttl_in_seconds_and_none_without_ttl() -> None:
    tracker = LockTracker(30)
    assert one(tracker, raw(b"k", b"x", pttl=1500)).ttl_seconds == 1.5
    assert one(tracker, raw(b"k2", b"x", pttl=-1)).ttl_seconds is None


def test_opaque_values_age_from_first_sighting() -> None:
    tracker = LockTracker(30)
    first = one(tracker, raw(b"k", b"token-1", now=NOW))
    tracker.finish_pass()
    later = one(tracker, raw(b"k", b"token-1", now=NOW + 40))
    assert (first.age_seconds, first.age_source) == (0, "first_seen")
    assert later.age_seconds == 40
    assert later.stuck


def test_a_new_value_means_a_new_lock() -> None:
    tracker = LockTracker(30)
    one(tracker, raw(b"k", b"token-1", now=NOW))
    tracker.finish_pass()
    again = one(tracker, raw(b"k", b"token-2", now=NOW + 40))
    assert again.age_seconds == 0


def test_a_hash_lock_ages_from_first_sighting() -> None:
    tracker = LockTracker(30)
    one(tracker, raw(b"h", None, now=NOW, kind="hash"))
    tracker.finish_pass()
    lock = one(tracker, raw(b"h", None, now=NOW + 31, kind="hash"))
    assert (lock.age_seconds, lock.stuck, lock.value, lock.kind) == (31, True, "<hash>", "hash")


def test_released_keys_are_forgotten() -> None:
    tracker = LockTracker(30)
    one(tracker, raw(b"k", b"token", now=NOW))
    tracker.finish_pass()
    assert tracker.remembered == 1
    vanished = tracker.finish_pass()  # a pass in which k was not seen
    assert len(vanished) == 1
    assert tracker.remembered == 0  # nothing kept for the gone key
    back = one(tracker, raw(b"k", b"token", now=NOW + 100))
    assert back.age_seconds == 0


def test_a_failed_pass_keeps_the_first_sightings() -> None:
    tracker = LockTracker(30)
    one(tracker, raw(b"k", b"token", now=NOW))
    tracker.finish_pass()
    one(tracker, raw(b"other", b"token", now=NOW + 5))
    one(tracker, raw(b"k", b"token", now=NOW + 5))
    tracker.abandon_pass()
    assert tracker.remembered == 1  # k, not the lock first seen in the failed pass
    assert one(tracker, raw(b"k", b"token", now=NOW + 50)).age_seconds == 50


def test_a_key_returned_twice_in_a_pass_counts_once() -> None:
    tracker = LockTracker(30)
    twice = raw(b"k", b"token", pttl=-1)
    verdict = read(tracker, twice, raw(b"j", b"token"), twice)
    assert (verdict.active, verdict.without_ttl, len(verdict.older)) == (2, 1, 2)
    assert read(tracker, twice).active == 0  # a later page of the same pass


def test_a_tracker_that_does_not_remember_still_counts_each_lock_once() -> None:
    tracker = LockTracker(30, remember=False)
    twice = raw(b"k", b"token")
    assert read(tracker, twice, raw(b"j", b"token"), twice).active == 2
    tracker.finish_pass()
    assert tracker.remembered == 0
    assert one(tracker, raw(b"k", b"token", now=NOW + 40)).age_seconds == 0


def test_only_the_locks_asked_for_are_built_in_full() -> None:
    tracker = LockTracker(30)
    locks = [raw(b"k%d" % age, b"%d" % ((NOW - age) * 1000)) for age in (5, 50, 20, 40)]
    verdict = read(tracker, *locks, older_than=30)
    assert sorted(lock.age_seconds for lock in verdict.older) == [40, 50]
    assert (verdict.active, verdict.stuck, verdict.newly_stuck_count) == (4, 2, 2)
    [page] = pages_of(locks)
    few = LockTracker(30).add_page(page, "node", math.inf, newly_stuck_wanted=1)
    assert (few.older, few.newly_stuck_count, len(few.newly_stuck)) == ([], 2, 1)


def random_value(rng: random.Random, now: float) -> bytes | None:
    """A mix of what lock values hold: times in every format, tokens, junk, not a string."""
    seconds = now - rng.choice([0, 1, 29.999, 30, 30.001, 45, 3600, -60])
    return rng.choice([
        b"%d" % (seconds * 1000),
        b"%d:worker-%d" % (seconds * 1000, rng.randrange(9)),
        b"%d" % seconds,
        b"%.3f" % seconds,
        b"%.2f:host" % seconds,
        b"token-%d" % rng.randrange(4),
        b"",
        b"42:worker",
        b"\xff\x00" * rng.randrange(3),
        b"9" * rng.randrange(1, 20),
        None,
    ])  # fmt: skip


def test_pages_classify_every_lock_as_the_rule_for_one_lock_does() -> None:
    """Counts, starts and stuck decisions of the page loop, against `classify` applied to
    each lock with first sightings kept by (key, value), over passes where locks come, stay,
    change value and go."""
    rng = random.Random(12)
    threshold = 30.0
    tracker = LockTracker(threshold)
    first_seen: dict[tuple[bytes, bytes | None], float] = {}
    stuck_before: set[tuple[bytes, bytes | None]] = set()
    keys = [b"lock:%d" % i for i in range(400)]
    values: dict[bytes, bytes | None] = {}
    for step in range(6):
        now = NOW + step * 17.5
        for key in rng.sample(keys, 300):  # some locks are released, some taken, some stay
            if key not in values or rng.random() < 0.3:
                values[key] = random_value(rng, now)
        held = [k for k in keys if k in values and rng.random() < 0.85]
        locks = [
            raw(
                k,
                values[k],
                now,
                rng.choice([-1, 5000]),
                "string" if values[k] is not None else "hash",
            )
            for k in held
        ]

        expected = []
        for lock in locks:
            identity = (lock.key, lock.value)
            since = first_seen.setdefault(identity, now)
            expected.append(
                classify(lock.key, lock.value, lock.kind, lock.pttl_ms, now, since, threshold)
            )
        got = [v for chunk in (locks[:100], locks[100:]) for v in read_all(tracker, *chunk)]

        classified = [lock for verdict in got for lock in verdict.older]
        assert {lock.key: lock for lock in classified} == {lock.key: lock for lock in expected}
        stuck_now = {
            (lock.key, lock.value) for lock, e in zip(locks, expected, strict=True) if e.stuck
        }
        assert sum(verdict.active for verdict in got) == len(locks)
        assert sum(verdict.stuck for verdict in got) == len(stuck_now)
        assert sum(v.without_ttl for v in got) == [lock.pttl_ms for lock in locks].count(-1)
        by_sighting = [lock for lock in expected if lock.age_source == "first_seen"]
        assert sum(verdict.first_seen for verdict in got) == len(by_sighting)
        assert sum(verdict.still_stuck for verdict in got) == len(stuck_now & stuck_before)
        assert sum(verdict.newly_stuck_count for verdict in got) == len(stuck_now - stuck_before)
        tracker.finish_pass()
        seen = {(lock.key, lock.value) for lock in locks}
        first_seen = {identity: at for identity, at in first_seen.items() if identity in seen}
        stuck_before = stuck_now


def test_memory_does_not_follow_the_size_of_keys_or_values() -> None:
    tracker = LockTracker(30)
    huge = [raw(b"k%d" % i + b"x" * 1_000_000, b"token" * 50_000) for i in range(10)]
    tracemalloc.start()
    try:
        read(tracker, *huge, older_than=math.inf)
        tracker.finish_pass()
        del huge
        remembered, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tracker.remembered == 10
    assert remembered < 10_000  # fingerprints, not the 10 MB of keys nor the values


@pytest.mark.parametrize(
    ("run_ids", "age"),
    [
        (["a", "a"], 50),  # the same server: the lock held all along
        (["a", "b"], 0),  # restarted: the key was created again, with the same token
        ([None, None], 50),  # INFO refused: no restart can be seen
        (["a", None], 50),
    ],
)
def test_first_sightings_are_forgotten_when_the_server_restarts(
    run_ids: list[str | None], age: float
) -> None:
    tracker = LockTracker(30)
    tracker.server_started("redis:6379", run_ids[0])
    one(tracker, raw(b"k", b"token", now=NOW))
    tracker.finish_pass()
    tracker.server_started("other:6379", "c")  # another node: not a restart
    tracker.server_started("redis:6379", run_ids[1])
    assert one(tracker, raw(b"k", b"token", now=NOW + 50)).age_seconds == age


def test_a_restart_keeps_ages_from_values_and_tells_the_old_sightings_gone() -> None:
    stamped = raw(b"s", b"%d" % ((NOW - 100) * 1000))
    tracker = LockTracker(30)
    tracker.server_started("redis:6379", "a")
    read(tracker, stamped, raw(b"k", b"token"))
    tracker.finish_pass()
    tracker.server_started("redis:6379", "b")
    verdict = read(tracker, stamped._replace(now=NOW + 50), raw(b"k", b"token", now=NOW + 50))
    assert (verdict.stuck, verdict.still_stuck) == (1, 1)  # the stamped lock: stuck all along
    assert [lock.age_seconds for lock in verdict.older] == [150, 0]
    assert len(tracker.finish_pass()) == 1  # k as it was before the restart: gone
    assert tracker.remembered == 2


def known_page(tracker: LockTracker, *locks: RawLock, older_than: float = math.inf) -> Page:
    """`locks` as the scanner hands over those the tracker let it read by their TTL alone
    (every one of them must be such a lock)."""
    keys = [lock.key for lock in locks]
    recall = tracker.recall("node", lambda: older_than)
    assert recall is not None
    remembered = recall.known(keys, locks[0].now)
    assert all(remembered), remembered
    return Page(
        locks[0].now,
        locks[0].now,
        keys,
        None,
        [lock.pttl_ms for lock in locks],
        None,
        0,
        remembered,
    )


def test_a_known_lock_is_read_by_its_ttl_alone_while_its_ttl_ends_when_it_did() -> None:
    tracker = LockTracker(30)
    lock = raw(b"k", b"token", pttl=20_000)
    read(tracker, lock)
    tracker.finish_pass()
    recall = tracker.recall("node", lambda: math.inf)
    assert recall is not None
    [entry] = recall.known([b"k"], NOW + 5)
    assert entry
    assert recall.known([b"other"], NOW + 5) == [0]
    assert unchanged([entry], [15_000], NOW + 5) == [True]  # 5 s later, 5 s less to live
    assert unchanged([entry], [15_000 - 100], NOW + 5) == [True]  # within the tolerance
    assert unchanged([entry], [29_000], NOW + 5) == [False]  # renewed, or taken again
    assert unchanged([entry], [-2], NOW + 5) == [False]  # gone
    assert unchanged([entry], [-1], NOW + 5) == [False]  # its TTL removed


@pytest.mark.parametrize(
    ("lock", "later", "threshold", "older_than"),
    [
        (raw(b"k", b"token", pttl=-1), 5, 30, math.inf),  # no TTL: taken again looks the same
        (raw(b"k", None, kind="hash"), 5, 30, math.inf),  # not a string: its TYPE is needed
        (raw(b"k", b"token"), 5, 30, 1),  # older than the locks shown so far: shown
        (raw(b"k", b"token"), 40, 30, math.inf),  # becomes stuck in this pass: logged
        (raw(b"k", b"token"), 40, 30, -math.inf),  # the same, shown last time too
        (raw(b"k", b"token"), 5, 30, -math.inf),  # every lock handed over in full
    ],
)
@pytest.mark.parametrize("shown_before", [False, True])
def test_locks_whose_values_are_read_again(
    lock: RawLock, later: float, threshold: float, older_than: float, shown_before: bool
) -> None:
    """Unless it was shown in the last pass, unchanged, and is not becoming stuck."""
    tracker = LockTracker(threshold)
    read(tracker, lock, older_than=-math.inf if shown_before else math.inf)
    tracker.finish_pass()
    recall = tracker.recall("node", lambda: older_than)
    assert recall is not None
    [entry] = recall.known([lock.key], NOW + later)
    kept = shown_before and lock.pttl_ms >= 0 and lock.value is not None and later < threshold
    assert bool(entry) == kept


def test_a_lock_shown_last_time_is_shown_again_without_reading_its_value() -> None:
    """As a pass reading it in full would show it: same value, today's TTL and age; and so
    again in the pass after (it stays remembered as shown)."""
    locks = [raw(b"ts", b"%d:w" % ((NOW - 10) * 1000)), raw(b"tok", b"token")]
    tracker = LockTracker(30)
    read(tracker, *locks)  # every lock shown
    tracker.finish_pass()
    for later in (NOW + 5, NOW + 15):
        again = [
            lock._replace(now=later, pttl_ms=lock.pttl_ms - round((later - NOW) * 1000))
            for lock in locks
        ]
        reference = LockTracker(30)
        read(reference, *locks)
        reference.finish_pass()
        in_full = read(reference, *again).older
        verdict = tracker.add_page(
            known_page(tracker, *again, older_than=-math.inf), "node", -math.inf
        )
        assert verdict.older == in_full
        assert [lock.age_seconds for lock in verdict.older] == [later - NOW + 10, later - NOW]
        tracker.finish_pass()


def test_a_lock_stuck_all_along_is_read_by_its_ttl_alone() -> None:
    tracker = LockTracker(30)
    lock = raw(b"k", b"token")
    read(tracker, lock)
    tracker.finish_pass()
    assert read(tracker, lock._replace(now=NOW + 40)).newly_stuck_count == 1  # read in full
    tracker.finish_pass()
    verdict = tracker.add_page(known_page(tracker, lock._replace(now=NOW + 50)), "node")
    assert (verdict.active, verdict.stuck, verdict.still_stuck, verdict.newly_stuck_count) == (
        1, 1, 1, 0,
    )  # fmt: skip


def test_known_pages_count_as_pages_read_in_full() -> None:
    """Counts and start times of locks taken from memory agree with reading them again:
    timestamps and tokens, stuck all along and not stuck."""
    locks = [
        *(raw(b"ts%d" % age, b"%d:w" % ((NOW - age) * 1000)) for age in (5, 35, 100)),
        *(raw(b"tok%d" % i, b"token-%d" % i) for i in range(3)),
    ]
    later = [lock._replace(now=NOW + 20, pttl_ms=lock.pttl_ms - 20_000) for lock in locks]
    results = []
    for page_of in (lambda tracker: next(pages_of(later)), lambda t: known_page(t, *later)):
        tracker = LockTracker(30)
        read(tracker, *locks)
        tracker.finish_pass()
        held = PassLocks()
        verdict = tracker.add_page(page_of(tracker), "node", math.inf, 0, held)
        counts = (verdict.active, verdict.stuck, verdict.still_stuck, verdict.first_seen)
        results.append((counts, verdict.without_ttl, verdict.newly_stuck_count, list(held)))
        assert len(tracker.finish_pass()) == 0
        assert tracker.remembered == 6
    assert results[0] == results[1]
    assert results[0][:3] == ((6, 2, 2, 3), 0, 0)


def test_another_lock_under_a_known_key_is_a_new_lock_and_the_old_one_is_gone() -> None:
    tracker = LockTracker(30)
    read(tracker, raw(b"k", b"token-a"))
    tracker.finish_pass()
    verdict = read(tracker, raw(b"k", b"token-b", now=NOW + 50), older_than=-math.inf)
    assert [lock.age_seconds for lock in verdict.older] == [0]  # first seen now
    assert len(tracker.finish_pass()) == 1  # token-a: released
    tracker.abandon_pass()
    verdict = read(tracker, raw(b"k", b"token-b", now=NOW + 80), older_than=-math.inf)
    assert [lock.age_seconds for lock in verdict.older] == [30]
