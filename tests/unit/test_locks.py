import pytest

from lock_monitor.locks import VALUE_DISPLAY_LIMIT, LockTracker, RawLock, display, parse_timestamp

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"1799999990000", 1_799_999_990.0),  # epoch ms, the backend's format
        (b"1799999990", 1_799_999_990.0),  # epoch seconds
        (b"1799999990.5", 1_799_999_990.5),  # seconds with a fraction
        (b"1799999990000:worker-7:pid-12", 1_799_999_990.0),  # <epoch-ms>:<holder>
        (b"1799999990:host-a", 1_799_999_990.0),
    ],
)
def test_timestamps_are_read_from_the_value(value: bytes, expected: float) -> None:
    assert parse_timestamp(value) == pytest.approx(expected)


@pytest.mark.parametrize(
    "value",
    [
        b"locked",
        b"",
        b"1",
        b"42:worker",
        b"9f1c2e",
        b"17999999900000000",
        b"-1799999990000",
        b"1799999990000x",
        b" 1799999990000",
        b"\xff\xfe",
    ],
)
def test_values_that_are_not_timestamps(value: bytes) -> None:
    assert parse_timestamp(value) is None


def raw(
    key: bytes, value: bytes | None, now: float = NOW, pttl: int = 20_000, kind: str = "string"
) -> RawLock:
    return RawLock(key, value, pttl, kind, now)


def test_age_from_the_value_and_stuck_past_the_threshold() -> None:
    tracker = LockTracker(stuck_threshold=30)
    young = tracker.classify(raw(b"lock:a", b"%d" % ((NOW - 10) * 1000)))
    old = tracker.classify(raw(b"lock:b", b"%d" % ((NOW - 45) * 1000)))
    assert (young.age_seconds, young.stuck, young.age_source) == (10, False, "value")
    assert old.age_seconds == pytest.approx(45)
    assert old.stuck


def test_exactly_at_the_threshold_is_not_stuck() -> None:
    lock = LockTracker(30).classify(raw(b"k", b"%d" % ((NOW - 30) * 1000)))
    assert lock.age_seconds == 30
    assert not lock.stuck


def test_future_timestamps_give_age_zero() -> None:
    lock = LockTracker(30).classify(raw(b"k", b"%d" % ((NOW + 3600) * 1000)))
    assert lock.age_seconds == 0
    assert not lock.stuck


def test_ttl_in_seconds_and_none_without_ttl() -> None:
    tracker = LockTracker(30)
    assert tracker.classify(raw(b"k", b"x", pttl=1500)).ttl_seconds == 1.5
    assert tracker.classify(raw(b"k2", b"x", pttl=-1)).ttl_seconds is None


def test_opaque_values_age_from_first_sighting() -> None:
    tracker = LockTracker(30)
    first = tracker.classify(raw(b"k", b"token-1", now=NOW))
    tracker.finish_pass()
    later = tracker.classify(raw(b"k", b"token-1", now=NOW + 40))
    assert (first.age_seconds, first.age_source) == (0, "first_seen")
    assert later.age_seconds == 40
    assert later.stuck


def test_a_new_value_means_a_new_lock() -> None:
    tracker = LockTracker(30)
    tracker.classify(raw(b"k", b"token-1", now=NOW))
    tracker.finish_pass()
    again = tracker.classify(raw(b"k", b"token-2", now=NOW + 40))
    assert again.age_seconds == 0


def test_a_hash_lock_ages_from_first_sighting() -> None:
    tracker = LockTracker(30)
    tracker.classify(raw(b"h", None, now=NOW, kind="hash"))
    tracker.finish_pass()
    lock = tracker.classify(raw(b"h", None, now=NOW + 31, kind="hash"))
    assert (lock.age_seconds, lock.stuck, lock.value, lock.kind) == (31, True, "<hash>", "hash")


def test_released_keys_are_forgotten() -> None:
    tracker = LockTracker(30)
    tracker.classify(raw(b"k", b"token", now=NOW))
    tracker.finish_pass()
    tracker.finish_pass()  # a pass in which k was not seen
    back = tracker.classify(raw(b"k", b"token", now=NOW + 100))
    assert back.age_seconds == 0
    assert len(tracker._first_seen) == 0  # nothing kept for the gone key


def test_a_failed_pass_keeps_the_first_sightings() -> None:
    tracker = LockTracker(30)
    tracker.classify(raw(b"k", b"token", now=NOW))
    tracker.finish_pass()
    tracker.classify(raw(b"other", b"token", now=NOW + 5))
    tracker.abandon_pass()
    assert tracker.classify(raw(b"k", b"token", now=NOW + 50)).age_seconds == 50


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
    tracker.classify(raw(b"k", b"token", now=NOW))
    tracker.finish_pass()
    tracker.server_started("other:6379", "c")  # another node: not a restart
    tracker.server_started("redis:6379", run_ids[1])
    assert tracker.classify(raw(b"k", b"token", now=NOW + 50)).age_seconds == age


def test_display_is_bounded_and_never_fails() -> None:
    assert display(b"\xff\x00ok", "string") == "\\xff\x00ok"
    long = display(b"x" * 1000, "string")
    assert len(long) == VALUE_DISPLAY_LIMIT + 1
    assert long.endswith("…")
    assert display(None, "zset") == "<zset>"
