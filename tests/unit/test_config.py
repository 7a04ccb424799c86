"""Settings: defaults in one place, and secrets kept out of what is shown."""

import pytest

from lock_monitor import config
from lock_monitor.config import RedisSettings, ScanSettings, ServerSettings


def test_the_settings_defaults_are_the_named_defaults() -> None:
    assert RedisSettings().url == config.DEFAULT_REDIS_URL
    assert RedisSettings().timeout == config.DEFAULT_REDIS_TIMEOUT
    assert ScanSettings() == ScanSettings(
        config.DEFAULT_PATTERN,
        config.DEFAULT_SCAN_COUNT,
        config.DEFAULT_STUCK_THRESHOLD,
        config.DEFAULT_INTERVAL,
        config.DEFAULT_MAX_REDIS_LOAD,
    )
    assert ServerSettings() == ServerSettings(config.DEFAULT_LISTEN_ADDRESS, config.DEFAULT_PORT)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@redis:6379/0", "redis://redis:6379/0"),
        (
            "rediss://lockmon:hunter2@redis:6380/1?ssl_cert_reqs=none",
            "rediss://lockmon@redis:6380/1",
        ),
        ("redis://redis", "redis://redis"),
        ("redis://:hunter2@host:notaport/0", "redis://host:notaport/0"),
    ],
)
def test_urls_are_shown_without_secrets(url: str, shown: str) -> None:
    assert config.url_without_secrets(url) == shown


@pytest.mark.parametrize(
    ("settings", "user"),
    [
        (RedisSettings(url="redis://lockmon:@redis:6379/0"), "lockmon"),
        (RedisSettings(url="redis://lock%40mon:pw@redis:6379/0"), "lock@mon"),
        (RedisSettings(url="redis://redis:6379/0", username="lockmon"), "lockmon"),
        (RedisSettings(url="redis://a:pw@redis:6379/0", username="b"), "a"),  # redis-py's choice
        (RedisSettings(url="redis://a:pw@redis/0", mode="sentinel", username="b"), "b"),
        (RedisSettings(url="redis://:pw@redis:6379/0"), None),
    ],
)
def test_the_logged_user_is_the_one_used_even_from_the_url(
    settings: RedisSettings, user: str | None
) -> None:
    shown = settings.redacted()
    assert shown["username"] == user
    assert "pw" not in repr(shown)
