"""Options and their validation: bad input is one line on stderr and exit code 2; the defaults
come from `config`."""

import re
from pathlib import Path

import click
import pytest

from lock_monitor import config
from lock_monitor.cli import cli
from lock_monitor.cli.options import redis_settings, scan_settings, server_settings
from lock_monitor.cli.run import run
from lock_monitor.config import RedisSettings, ScanSettings, ServerSettings
from tests.unit.conftest import RunCli

pytestmark = pytest.mark.usefixtures("clean_env")

BAD_INPUTS = [
    (["run", "--interval", "0"], "--interval"),
    (["locks", "--from", "ftp://host:9150"], "--from"),
    (["locks", "--from", "localhost:9150"], "--from"),
    (["locks", "--watch", "--every", "0"], "--every"),
    (["run", "--interval", "-1"], "--interval"),
    (["run", "--stuck-threshold", "-5"], "--stuck-threshold"),
    (["run", "--port", "70000"], "--port"),
    (["run", "--port", "-1"], "--port"),
    (["run", "--redis-url", "http://localhost:6379"], "--redis-url"),
    (["run", "--redis-url", "localhost:6379"], "--redis-url"),
    (["run", "--redis-url", "redis://:hunter2@host:99999"], "--redis-url"),
    (["run", "--redis-url", "redis://host/abc"], "--redis-url"),
    (["run", "--pattern", ""], "--pattern"),
    (["run", "--pattern", "   "], "--pattern"),
    (["run", "--scan-count", "0"], "--scan-count"),
    (["run", "--redis-password-file", "/nonexistent/secret"], "--redis-password-file"),
    (["run", "--log-level", "loud"], "--log-level"),
    (["run", "--log-format", "xml"], "--log-format"),
    (["run", "--max-redis-load", "0"], "--max-redis-load"),
    (["run", "--redis-mode", "sentinel"], "sentinel mode needs"),
    (["locks", "--scan-count", "-3"], "--scan-count"),
    (["run", "--no-such-option"], "no-such-option"),
    (["run", "--interval", "nan"], "--interval"),
    (["run", "--interval", "inf"], "--interval"),
    (["run", "--interval", "100000"], "--interval"),
    (["run", "--redis-timeout", "nan"], "--redis-timeout"),
    (["run", "--max-redis-load", "nan"], "--max-redis-load"),
    (["locks", "--stuck-threshold", "nan"], "--stuck-threshold"),
    (["locks", "--stuck-threshold", "inf"], "--stuck-threshold"),
    (["locks", "--scan-count", "1000000000"], "--scan-count"),
    (["locks", "--limit", "-1"], "--limit"),
    (["locks", "--all", "--limit", "5"], "--all prints every lock from Redis"),
    (["locks", "--all", "--from", "http://daemon:9150"], "--all prints every lock from Redis"),
    (["run", "--redis-url", "rediss://h:6380/0?ssl_cert_reqs=none"], "options in the URL"),
    (["run", "--redis-url", "redis://h/0?socket_timeout=600"], "options in the URL"),
    (["locks", "--redis-password", "hunter2"], "REDIS_PASSWORD"),
    (["run", "--redis-url", "redis://lockmon:hunter2@redis:6379/0"], "LOCK_MONITOR_REDIS_URL"),
    (["locks", "--redis-url", "rediss://:hunter2@[::1]:6380/0"], "shows in `ps`"),
    (["backup", "redis", "--redis-url", "redis://:hunter2@r/0", "--dest", "/"], "in `ps`"),
    (["run", "--redis-url", "redis://u:hunter2@r/0", "--redis-url", "redis://r/0"], "in `ps`"),
    (["locks", "--redis-url", "redis://r/0", "--redis-url", "redis://:hunter2@r/0"], "in `ps`"),
    (["locks", "--redis-url", "redis://r:0/0", "--redis-url", "redis://r/0"], "--redis-url"),
    (["locks", "--sentinel-password", "hunter2"], "LOCK_MONITOR_SENTINEL_PASSWORD"),
    (["locks", "--from", "https://u:hunter2@h:9150"], "shows in `ps`"),
    (["locks", "--from", "http://h", "--from", "http://u:hunter2@h"], "shows in `ps`"),
    (["locks", "--from", "http://h", "--from-password", "hunter2"], "LOCK_MONITOR_FROM_PASSWORD"),
    (["locks", "--from-ca-file", "/dev/null"], "go with --from"),
    (["locks", "--from", "http://h:9150", "--from-ca-file", "/dev/null"], "https:// --from URL"),
    (["locks", "--from", "https://h", "--from-cert-file", "/dev/null"], "go together"),
    (["locks", "--from", "https://h", "--from-username", "u"], "LOCK_MONITOR_FROM_PASSWORD"),
    *(
        (["restore", "sqlite", "/dev/null", "--db", "x.db", "--max-size", size], "--max-size")
        for size in ("0", "-5", "1.5G", "10X", "G", "")
    ),
    (["run", "--listen-address", "localhost:http"], "--listen-address"),
    (["run", "--listen-address", "127.0.0.1:9150", "--port", "9151"], "port is given twice"),
]


@pytest.mark.parametrize(("args", "mentions"), BAD_INPUTS)
def test_bad_input_is_one_line_and_exit_2(run_cli: RunCli, args: list[str], mentions: str) -> None:
    code, out, err = run_cli(*args)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("lock-monitor: error: ")
    assert mentions in err
    assert "Traceback" not in err
    assert "hunter2" not in err


@pytest.mark.parametrize(
    ("env", "mentions"),
    [
        ({"LOCK_MONITOR_INTERVAL": "0"}, "--interval"),
        ({"LOCK_MONITOR_PORT": "123456"}, "--port"),
        ({"LOCK_MONITOR_PATTERN": " "}, "--pattern"),
        ({"LOCK_MONITOR_INTERVAL": "nan"}, "--interval"),
        ({"LOCK_MONITOR_REDIS_URL": "redis://h:0/0"}, "LOCK_MONITOR_REDIS_URL"),
        ({"LOCK_MONITOR_PORT": "9151", "LOCK_MONITOR_LISTEN_ADDRESS": ":9150"}, "twice"),
        # The backend's variables are blamed for their own values, not the unset --redis-url.
        ({"REDIS_PORT": "not-a-port"}, "REDIS_PORT='not-a-port'"),
        ({"REDIS_PORT": "tcp://10.0.0.7:6379"}, "enableServiceLinks"),
        ({"REDIS_HOST": "redis/0"}, "REDIS_HOST='redis/0'"),
    ],
)
def test_environment_variables_are_validated_too(
    run_cli: RunCli, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], mentions: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, _, err = run_cli("run")
    assert code == 2
    assert mentions in err
    assert len(err.strip().splitlines()) == 1
    if "LOCK_MONITOR_REDIS_URL" not in env:
        assert "REDIS_URL" not in err.upper().replace("-", "_")


def test_a_repeated_redis_url_is_checked_each_time_and_the_last_one_wins() -> None:
    redis, _, _ = run_settings("--redis-url", "redis://a:6379/0", "--redis-url", "redis://b/1")
    assert redis.url == "redis://b/1"


def test_an_explicit_redis_url_wins_over_a_bad_redis_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_PORT", "not-a-port")
    redis, _, _ = run_settings("--redis-url", "redis://redis:6380/2")
    assert redis.url == "redis://redis:6380/2"


def test_empty_password_file_is_refused(run_cli: RunCli, tmp_path: Path) -> None:
    empty = tmp_path / "password"
    empty.write_text("\n")
    code, _, err = run_cli("run", "--redis-password-file", str(empty))
    assert code == 2
    assert "is empty" in err


def test_help_lists_every_option_with_its_env_var(run_cli: RunCli) -> None:
    code, out, _ = run_cli("run", "--help")
    assert code == 0
    for option in [
        "redis-url",
        "redis-mode",
        "redis-username",
        "redis-password-file",
        "redis-ca-file",
        "redis-cert-file",
        "redis-key-file",
        "pattern",
        "stuck-threshold",
        "interval",
        "scan-count",
        "listen-address",
        "port",
        "log-level",
        "log-format",
        "max-redis-load",
    ]:
        assert f"--{option}" in out
        assert "LOCK_MONITOR_" + option.upper().replace("-", "_") in out
    assert "REDIS_PASSWORD" in out


DEFAULTS = [
    ("run", "redis_mode", config.DEFAULT_REDIS_MODE),
    ("run", "redis_timeout", config.DEFAULT_REDIS_TIMEOUT),
    ("run", "pattern", config.DEFAULT_PATTERN),
    ("run", "scan_count", config.DEFAULT_SCAN_COUNT),
    ("run", "stuck_threshold", config.DEFAULT_STUCK_THRESHOLD),
    ("run", "interval", config.DEFAULT_INTERVAL),
    ("run", "max_redis_load", config.DEFAULT_MAX_REDIS_LOAD),
    ("run", "listen_address", config.DEFAULT_LISTEN_ADDRESS),
    ("run", "port", config.DEFAULT_PORT),
    ("run", "log_level", config.DEFAULT_LOG_LEVEL),
    ("run", "log_format", config.DEFAULT_LOG_FORMAT),
    ("locks", "pattern", config.DEFAULT_PATTERN),
    ("demo", "interval", config.DEMO_INTERVAL),
    ("demo", "port", config.DEFAULT_PORT),
    ("demo", "stuck_threshold", config.DEFAULT_STUCK_THRESHOLD),
    ("backup redis", "keep_days", config.DEFAULT_REDIS_BACKUP_KEEP_DAYS),
    ("backup redis", "dest", config.DEFAULT_BACKUP_DIR),
    ("backup sqlite", "keep_days", config.DEFAULT_SQLITE_BACKUP_KEEP_DAYS),
]


@pytest.mark.parametrize(("path", "name", "default"), DEFAULTS)
def test_each_default_comes_from_config_and_is_shown_in_help(
    path: str, name: str, default: object
) -> None:
    command: click.Command = cli
    with click.Context(cli, info_name="lock-monitor") as ctx:
        for part in path.split():
            assert isinstance(command, click.Group)
            found = command.get_command(ctx, part)
            assert found is not None
            command = found
            ctx = click.Context(command, info_name=part, parent=ctx)
        (param,) = [p for p in command.params if p.name == name]
        assert param.default == default
        help_text = " ".join(command.get_help(ctx).split())  # undo the wrapping
    shown = re.search(rf"--{name.replace('_', '-')} .*?default: ([^;\]]+)", help_text)
    assert shown is not None
    assert shown[1] == str(default)


def test_help_names_the_redis_url_the_environment_gives(run_cli: RunCli) -> None:
    _, out, _ = run_cli("locks", "--help")
    assert config.DEFAULT_REDIS_URL in out
    assert "$REDIS_HOST:$REDIS_PORT" in out


def run_settings(*args: str) -> tuple[RedisSettings, ScanSettings, ServerSettings]:
    """The settings `lock-monitor run ARGS` would start with: parsed and validated, not run."""
    with run.make_context("run", list(args)) as ctx:
        return redis_settings(ctx.params), scan_settings(ctx.params), server_settings(ctx.params)


def test_the_options_defaults_are_the_settings_defaults() -> None:
    assert run_settings() == (RedisSettings(), ScanSettings(), ServerSettings())


@pytest.mark.parametrize(
    ("args", "listen_address", "port"),
    [
        ([], config.DEFAULT_LISTEN_ADDRESS, config.DEFAULT_PORT),
        (["--port", "9151"], config.DEFAULT_LISTEN_ADDRESS, 9151),
        (["--listen-address", "127.0.0.1"], "127.0.0.1", config.DEFAULT_PORT),
        (["--listen-address", "127.0.0.1:9152"], "127.0.0.1", 9152),
        (["--listen-address", "[::1]:9153"], "::1", 9153),
        (["--listen-address", ":9154"], config.DEFAULT_LISTEN_ADDRESS, 9154),
        (["--listen-address", "::1", "--port", "9155"], "::1", 9155),
    ],
)
def test_a_port_in_the_listen_address_stands_in_for_port(
    args: list[str], listen_address: str, port: int
) -> None:
    assert run_settings(*args)[2] == ServerSettings(listen_address, port)


def test_a_password_file_wins_over_redis_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REDIS_PASSWORD", "from-env")
    secret = tmp_path / "password"
    secret.write_text("from-file\n")
    assert run_settings()[0].password == "from-env"
    assert run_settings("--redis-password-file", str(secret))[0].password == "from-file"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://u:hun/ter2@db-7f3:6379/0", "percent-encode it (%2F, %3F, %23)"),
        ("redis://:hun#ter2@db-7f3/0", "percent-encode it"),
        ("redis://:hun?ter2@db-7f3/0", "percent-encode it"),
        ("redis:/db-7f3:6379/0", "two slashes after the scheme"),
        ("redis:db-7f3", "two slashes after the scheme"),
        ("REDISS://db-7f3:6380/0", "lower case"),
        ("Redis://db-7f3", "lower case"),
        ("http://db-7f3:6379", "must be redis:// or rediss://"),
        ("db-7f3:6379", "not a URL"),
        ("redis://u:hunter2@[fe80::9/0", "an IPv6 address goes in brackets"),
        ("redis://u:hun[ter2@db-7f3/0", "percent-encoded (%5B, %5D)"),
        ("redis://:hunter2@db-7f3:99999/0", "a port is a number from 1 to 65535"),
        ("redis://:hunter2@db-7f3:0/0", "a port is a number from 1 to 65535"),
        ("redis://:hunter2@db-7f3/abc", "must be a number, such as /0"),
        ("redis://:hunter2@/0", "names no host"),
        ("rediss://:hunter2@db-7f3/0#frag", "options in the URL are not accepted"),
    ],
)
def test_a_bad_url_is_named_without_quoting_any_of_it(
    run_cli: RunCli, monkeypatch: pytest.MonkeyPatch, url: str, problem: str
) -> None:
    """From the environment (where a password is allowed), so only the URL's own problem shows."""
    monkeypatch.setenv("LOCK_MONITOR_REDIS_URL", url)
    code, _, err = run_cli("locks")
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert problem in err
    for part in ("hun", "ter2", "db-7f3", "fe80", "abc", "frag"):
        assert part not in err


def test_a_password_in_the_url_is_fine_from_the_environment(
    run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCK_MONITOR_REDIS_URL", "redis://lockmon:hunter2@127.0.0.1:1/0")
    code, _, err = run_cli("locks", "--redis-timeout", "0.5")
    assert code == 1  # accepted; nothing listens on port 1
    assert "cannot read locks from redis://lockmon@127.0.0.1:1/0" in err
    assert "hunter2" not in err
