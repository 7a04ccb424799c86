"""The rule for one lock: timestamps in values, and what is shown of keys and values."""

import pytest

from lock_monitor.locks import VALUE_DISPLAY_LIMIT, display, parse_timestamp


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


def test_display_is_bounded_and_never_fails() -> None:
    assert display(b"\xff\x00ok", "string") == "\\xff\x00ok"
    long = display(b"x" * 1000, "string")
    assert len(long) == VALUE_DISPLAY_LIMIT + 1
    assert long.endswith("…")
    assert display(None, "zset") == "<zset>"
