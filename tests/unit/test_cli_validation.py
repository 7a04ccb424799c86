"""The pure parsers behind the options: what they accept, and whom they blame."""

import re

import pytest

from lock_monitor.cli.validation import (
    checked_redis_url,
    redis_url_from_environment,
    split_listen_address,
)
from lock_monitor.config import DEFAULT_LISTEN_ADDRESS, DEFAULT_REDIS_URL


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.0.0.0", ("0.0.0.0", None)),
        ("localhost", ("localhost", None)),
        ("127.0.0.1:9150", ("127.0.0.1", 9150)),
        ("exporter.example:0", ("exporter.example", 0)),
        (":9150", (DEFAULT_LISTEN_ADDRESS, 9150)),
        ("::1", ("::1", None)),
        ("::", ("::", None)),
        ("[::1]", ("::1", None)),
        ("[::1]:9150", ("::1", 9150)),
        (" 127.0.0.1:9150 ", ("127.0.0.1", 9150)),
    ],
)
def test_listen_address_with_or_without_a_port(
    value: str, expected: tuple[str, int | None]
) -> None:
    assert split_listen_address(value) == expected


@pytest.mark.parametrize(
    "value",
    ["", " ", "host:", "host:http", "host:65536", "host:-1", "a:b:c", "[::1", "[::1]9150", "[x]:1"],
)
def test_listen_address_refuses_what_it_cannot_serve_on(value: str) -> None:
    with pytest.raises(ValueError, match=r"is not HOST, HOST:PORT, \[IPv6\] or \[IPv6\]:PORT"):
        split_listen_address(value)


@pytest.mark.parametrize(
    ("environ", "url"),
    [
        ({}, DEFAULT_REDIS_URL),
        ({"REDIS_HOST": "", "REDIS_PORT": ""}, DEFAULT_REDIS_URL),
        ({"REDIS_HOST": "redis", "REDIS_PORT": "6380"}, "redis://redis:6380/0"),
        ({"REDIS_HOST": "Redis.Example"}, "redis://Redis.Example:6379/0"),
        ({"REDIS_HOST": "::1"}, "redis://[::1]:6379/0"),
    ],
)
def test_redis_url_from_the_backends_variables(environ: dict[str, str], url: str) -> None:
    assert redis_url_from_environment(environ) == url


@pytest.mark.parametrize(
    ("environ", "blamed"),
    [
        ({"REDIS_PORT": "abc"}, "REDIS_PORT='abc'"),
        ({"REDIS_PORT": "0"}, "REDIS_PORT='0'"),
        ({"REDIS_PORT": "65536"}, "REDIS_PORT='65536'"),
        (
            {"REDIS_PORT": "tcp://10.0.0.7:6379"},
            "REDIS_PORT='tcp://10.0.0.7:6379' is not a port number from 1 to 65535 "
            "(a Kubernetes service link: set enableServiceLinks: false)",
        ),
        ({"REDIS_HOST": "redis/1"}, "REDIS_HOST='redis/1'"),
        ({"REDIS_HOST": "user@redis"}, "REDIS_HOST='user@redis'"),
        ({"REDIS_HOST": "redis?x=1"}, "REDIS_HOST='redis?x=1'"),
        ({"REDIS_HOST": "re dis"}, "REDIS_HOST='re dis'"),
        ({"REDIS_HOST": "a:b"}, "REDIS_HOST='a:b'"),
    ],
)
def test_a_bad_variable_is_named(environ: dict[str, str], blamed: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(blamed)) as error:
        redis_url_from_environment(environ)
    assert "--redis-url" not in str(error.value)


def test_a_bad_url_is_named_without_quoting_it() -> None:
    with pytest.raises(ValueError, match="the scheme must be redis:// or rediss://") as error:
        checked_redis_url("http://:hunter2@redis:6379/0")
    assert "hunter2" not in str(error.value)
    assert "redis:6379" not in str(error.value)
