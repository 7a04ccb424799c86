import pytest
from redis.connection import Connection

from lock_monitor.wire import bulk, per_key

KEYS = [b"lock:appointment:1", b"lock:\r\n$3\r\n\xff", b""]


def packed(commands: list[tuple[bytes, ...]]) -> bytes:
    return b"".join(Connection().pack_commands(commands))


@pytest.mark.parametrize("keys", [KEYS, KEYS[:1]])
def test_per_key_writes_what_redis_py_would(keys: list[bytes]) -> None:
    assert per_key(bulk(keys), (b"PTTL",)) == packed([(b"PTTL", key) for key in keys])
    assert per_key(bulk(keys), (b"GETRANGE", b"0", b"255")) == packed(
        [(b"GETRANGE", key, b"0", b"255") for key in keys]
    )


@pytest.mark.parametrize("keys", [KEYS, KEYS[:1]])
@pytest.mark.parametrize(
    "commands",
    [
        [(b"GETRANGE", b"0", b"255"), (b"PTTL",)],  # what a pass sends
        [(b"PTTL",), (b"GETRANGE", b"0", b"255"), (b"TYPE",)],
    ],
)
def test_per_key_sends_each_keys_commands_together(
    keys: list[bytes], commands: list[tuple[bytes, ...]]
) -> None:
    expected = [(name, key, *tail) for key in keys for name, *tail in commands]
    assert per_key(bulk(keys), *commands) == packed(expected)


def test_per_key_of_no_key_writes_nothing() -> None:
    assert per_key([], (b"GETRANGE", b"0", b"255"), (b"PTTL",)) == b""
