"""Options and their validation: bad input is one line on stderr and exit code 2."""

import sys
from pathlib import Path

import pytest

from lock_monitor import __version__
from lock_monitor.backup_sqlite import MAX_SIZE_FACTOR, MIN_MAX_SIZE
from lock_monitor.cli import main


def run_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["lock-monitor", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


BAD_INPUTS = [
    (["run", "--interval", "0"], "--interval"),
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
    (["locks", "--all", "--limit", "5"], "--all prints every lock: leave out --limit"),
    (["run", "--redis-url", "rediss://h:6380/0?ssl_cert_reqs=none"], "options in the URL"),
    (["run", "--redis-url", "redis://h/0?socket_timeout=600"], "options in the URL"),
    (["locks", "--redis-password", "hunter2"], "REDIS_PASSWORD"),
    (["locks", "--sentinel-password", "hunter2"], "LOCK_MONITOR_SENTINEL_PASSWORD"),
    *(
        (["restore", "sqlite", "/dev/null", "--db", "x.db", "--max-size", size], "--max-size")
        for size in ("0", "-5", "1.5G", "10X", "G", "")
    ),
]


@pytest.mark.parametrize(("args", "mentions"), BAD_INPUTS)
def test_bad_input_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    mentions: str,
) -> None:
    code, out, err = run_main(monkeypatch, capsys, *args)
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
        ({"REDIS_PORT": "not-a-port"}, "--redis-url"),
        ({"LOCK_MONITOR_INTERVAL": "nan"}, "--interval"),
    ],
)
def test_environment_variables_are_validated_too(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    mentions: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, _, err = run_main(monkeypatch, capsys, "run")
    assert code == 2
    assert mentions in err
    assert len(err.strip().splitlines()) == 1


def test_empty_password_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    empty = tmp_path / "password"
    empty.write_text("\n")
    code, _, err = run_main(monkeypatch, capsys, "run", "--redis-password-file", str(empty))
    assert code == 2
    assert "is empty" in err


def test_version(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(monkeypatch, capsys, "--version")
    assert code == 0
    assert __version__ in out


def test_help_lists_every_option_with_its_env_var(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_main(monkeypatch, capsys, "run", "--help")
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
    assert "9150" in out
    assert "lock:appointment:*" in out


def test_redis_url_defaults_to_the_guides_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from lock_monitor.cli.options import _default_redis_url

    assert _default_redis_url() == "redis://localhost:6379/0"
    monkeypatch.setenv("REDIS_HOST", "redis")
    monkeypatch.setenv("REDIS_PORT", "6380")
    assert _default_redis_url() == "redis://redis:6380/0"


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
    from lock_monitor.config import url_without_secrets

    assert url_without_secrets(url) == shown


def test_restore_help_states_the_max_size_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_main(monkeypatch, capsys, "restore", "sqlite", "--help")
    assert code == 0
    default = f"Default: {MAX_SIZE_FACTOR} times the size of --db, at least {MIN_MAX_SIZE >> 30}G."
    assert default in " ".join(out.split())
    assert "LOCK_MONITOR_MAX_SIZE" in out
