"""A subscriber's pure parts: what a notify-keyspace-events value lacks, its backoff,
reading batches, and the `--events on` startup check. The subscribers against a real server
are in tests/integration/test_events.py."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from lock_monitor.config import RedisSettings
from lock_monitor.subscriber import (
    BACKOFF_CAP,
    BATCH,
    _batch,
    backoff,
    missing_classes,
    startup_problem,
)

SETTINGS = RedisSettings(url="redis://redis:6379/0")


@pytest.mark.parametrize(
    ("flags", "missing"),
    [
        ("", "Kg$xe"),
        ("xE", "Kg$e"),  # expirations on the keyevent channel only: the default of some images
        ("Kg$xe", ""),
        ("Kg$xeh", ""),
        ("AK", ""),  # A stands for g$lshzxetd
        ("KEA", ""),
        ("Kx", "g$e"),
    ],
)
def test_missing_classes(flags: str, missing: str) -> None:
    assert missing_classes(flags) == missing


def test_backoff_grows_and_is_capped() -> None:
    assert all(0.1 <= backoff(1) <= 0.2 for _ in range(50))
    assert all(BACKOFF_CAP / 2 <= backoff(30) <= BACKOFF_CAP for _ in range(50))


class Reader:
    """hiredis' Reader: parsed replies, then its not-enough-data marker."""

    def __init__(self, replies: list[Any]) -> None:
        self.replies = replies

    def gets(self) -> Any:
        return self.replies.pop(0) if self.replies else object()


def test_a_batch_takes_what_is_parsed_up_to_its_size() -> None:
    message = [b"pmessage", b"p", b"c", b"set"]
    assert _batch(message, None) == [message]
    assert len(_batch(message, Reader([message] * 5))) == 6
    assert len(_batch(message, Reader([message] * (BATCH * 2)))) == BATCH
    with pytest.raises(redis.ResponseError):
        _batch(message, Reader([redis.ResponseError("NOPERM")]))


class Node:
    def __init__(self, flags: str | Exception) -> None:
        self.flags = flags

    def config_get(self, name: str) -> dict[str, str]:
        if isinstance(self.flags, Exception):
            raise self.flags
        return {name: self.flags}


class Target:
    def __init__(self, *nodes: Node) -> None:
        self.list = [(f"n{i}:6379", node) for i, node in enumerate(nodes)]

    def nodes(self) -> list[tuple[str, Node]]:
        return self.list

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("nodes", "problem"),
    [
        ([Node("KEA"), Node("Kg$xeh")], None),
        ([Node("KEA"), Node("Ex")], "notify-keyspace-events is 'Ex' on n1:6379"),
        ([Node(redis.ResponseError("NOPERM config|get"))], None),  # cannot tell: start
    ],
)
def test_startup_check_for_events_on(nodes: list[Node], problem: str | None) -> None:
    found = startup_problem(SETTINGS, lambda settings: Target(*nodes))  # type: ignore[arg-type, return-value]
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert found.startswith(problem)


def test_startup_check_cannot_tell_while_redis_is_down() -> None:
    def down(settings: RedisSettings) -> Any:
        raise redis.ConnectionError("refused")

    assert startup_problem(SETTINGS, down) is None
