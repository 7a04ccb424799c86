"""How the client options are built for each mode: auth, TLS, timeouts, and what goes where."""

import ssl
import sys
from pathlib import Path

import pytest
import redis

from lock_monitor.cli import main
from lock_monitor.config import RedisSettings
from lock_monitor.connection import (
    connection_options,
    describe_tls_error,
    sentinel_options,
    uses_tls,
)

SENTINELS = (("10.0.0.1", 26379), ("10.0.0.2", 26379))


def sentinel_settings(**overrides: object) -> RedisSettings:
    values: dict[str, object] = {
        "url": "redis://ignored:6379/3",
        "mode": "sentinel",
        "password": "data-pw",
        "sentinels": SENTINELS,
        "sentinel_master": "locks",
        "sentinel_password": "sentinel-pw",
    }
    values.update(overrides)
    return RedisSettings(**values)  # type: ignore[arg-type]


def test_plain_connections_time_out_and_never_retry_behind_the_loop() -> None:
    options = connection_options(RedisSettings(url="redis://h:6379/0", password="pw", timeout=2.5))
    assert options["socket_timeout"] == options["socket_connect_timeout"] == 2.5
    assert options["retry"].get_retries() == 0
    assert options["password"] == "pw"
    assert not any(key.startswith("ssl_") for key in options)


def test_tls_verifies_by_default_and_carries_the_client_pair() -> None:
    settings = RedisSettings(
        url="rediss://h:6380/0", ca_file="/ca.crt", cert_file="/c.crt", key_file="/c.key"
    )
    options = connection_options(settings)
    assert (options["ssl_ca_certs"], options["ssl_certfile"], options["ssl_keyfile"]) == (
        "/ca.crt",
        "/c.crt",
        "/c.key",
    )
    assert "ssl_cert_reqs" not in options  # redis-py's default: required
    assert "ssl_check_hostname" not in options


def test_insecure_turns_off_both_checks() -> None:
    options = connection_options(RedisSettings(url="rediss://h:6380/0", tls_insecure=True))
    assert options["ssl_cert_reqs"] == "none"
    assert options["ssl_check_hostname"] is False


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (RedisSettings(url="redis://h/0"), False),
        (RedisSettings(url="rediss://h/0"), True),
        (RedisSettings(url="rediss://h/0", mode="cluster"), True),
        (RedisSettings(url="redis://h/0", ca_file="/ca.crt"), False),  # the CLI refuses this
        (sentinel_settings(), False),
        (sentinel_settings(ca_file="/ca.crt"), True),
        (sentinel_settings(tls_insecure=True), True),
        (sentinel_settings(url="rediss://ignored/0"), True),
    ],
)
def test_when_tls_is_on(settings: RedisSettings, expected: bool) -> None:
    assert uses_tls(settings) is expected


def test_sentinels_get_their_own_password_and_the_primary_the_data_one() -> None:
    for_sentinels, for_primary = sentinel_options(sentinel_settings())
    assert for_sentinels["password"] == "sentinel-pw"
    assert for_primary["password"] == "data-pw"
    assert for_primary["db"] == 3  # from the URL, whose host the Sentinels replace
    assert "host" not in for_primary
    assert "port" not in for_primary
    assert for_sentinels["retry"].get_retries() == 0
    assert "ssl" not in for_sentinels
    assert "ssl" not in for_primary


def test_sentinel_tls_applies_to_both_sides() -> None:
    for options in sentinel_options(sentinel_settings(ca_file="/ca.crt")):
        assert options["ssl"] is True
        assert options["ssl_ca_certs"] == "/ca.crt"


def test_a_sentinel_without_a_password_gets_none() -> None:
    for_sentinels, _ = sentinel_options(sentinel_settings(sentinel_password=None))
    assert "password" not in for_sentinels


def test_tls_errors_are_explained_and_others_left_alone() -> None:
    refused = ssl.SSLCertVerificationError(1, "certificate verify failed")
    refused.verify_message = "unable to get local issuer certificate"
    try:
        try:
            raise refused
        except ssl.SSLError as exc:
            raise redis.ConnectionError("Error 1 connecting to h:6380.") from exc
    except redis.ConnectionError as wrapped:
        text = describe_tls_error(wrapped)
    assert text is not None
    assert "does not verify (unable to get local issuer certificate)" in text
    assert describe_tls_error(redis.ConnectionError("Connection refused")) is None


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--redis-url", "redis://h/0", "--redis-tls-insecure"], "need a rediss:// URL"),
        (["--redis-url", "redis://h/0", "--redis-ca-file", "CA"], "need a rediss:// URL"),
        (["--redis-mode", "cluster", "--redis-url", "redis://h/2"], "only database 0"),
        (["--redis-mode", "sentinel", "--sentinel", "h:26379"], "--sentinel-master"),
    ],
)
def test_contradictory_connection_options_are_refused(
    args: list[str],
    fragment: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("not used")
    argv = [str(ca) if arg == "CA" else arg for arg in args]
    monkeypatch.setattr(sys, "argv", ["lock-monitor", "locks", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert fragment in err
