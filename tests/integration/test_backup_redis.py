"""`lock-monitor backup redis` against a real redis-server, and the documented restore."""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.servers import (
    RedisServer,
    cli_error,
    cli_record,
    free_port,
    monitor_env,
    redis_server,
    run_monitor,
    wait_for,
)

pytestmark = pytest.mark.integration

# Fork-and-stream at once (the production default waits 5 s for more replicas to join).
DISKLESS = ("--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0")
DISK = ("--repl-diskless-sync", "no")

Dataset = dict[bytes, tuple[bytes, int]]


def fill(client: redis.Redis) -> Dataset:
    """Locks with TTLs, keys without, other types, and a value large enough for many reads."""
    pipe = client.pipeline(transaction=False)
    for i in range(300):
        pipe.set(f"lock:appointment:{i}", str(1_700_000_000_000 + i), px=60_000 + i * 100)
    pipe.set("config:version", "7")
    pipe.hset("appointment:1", mapping={"slot": "09:30", "doctor": "x"})
    pipe.rpush("queue", *range(50))
    pipe.set("blob", random.Random(5).randbytes(1_400_000), ex=3600)  # does not compress
    pipe.execute()
    return snapshot(client)


def snapshot(client: redis.Redis) -> Dataset:
    """Every key's serialized value and its TTL in ms (-1: none)."""
    keys = sorted(client.scan_iter(count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.dump(key)
        pipe.pttl(key)
    values = pipe.execute()
    return {key: (values[2 * i], values[2 * i + 1]) for i, key in enumerate(keys)}


def assert_restored(before: Dataset, after: Dataset, elapsed_ms: int) -> None:
    assert after.keys() == before.keys()
    for key, (value, ttl) in before.items():
        restored_value, restored_ttl = after[key]
        assert restored_value == value, key
        if ttl == -1:
            assert restored_ttl == -1, key
        else:
            assert ttl - elapsed_ms - 1000 <= restored_ttl <= ttl, key


def backup_ok(server: RedisServer, dest: Path, *args: str, **env: str) -> Path:
    """Run the backup; it must succeed with one JSON line naming a complete file."""
    result = run_monitor(
        "backup", "redis", "--redis-url", server.url, "--dest", str(dest), *args,
        env=monitor_env(**env),
    )  # fmt: skip
    record = cli_record(result, "redis_backup_written")
    file = Path(record["file"])
    assert file.parent == dest
    assert record["bytes"] > 1_400_000
    assert [p.name for p in dest.iterdir()] == [file.name]
    return file


def backup_fails(server_url: str, dest: Path, **kwargs: object) -> str:
    """Run the backup; it must fail with one line on stderr and leave `dest` empty."""
    result = run_monitor(
        "backup", "redis", "--redis-url", server_url, "--dest", str(dest),
        "--redis-timeout", "2", **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip
    line = cli_error(result)
    assert list(dest.iterdir()) == []
    return line


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    path = tmp_path / "backup"
    path.mkdir()
    return path


@pytest.mark.parametrize("sync", [DISKLESS, DISK], ids=["diskless", "disk"])
def test_backup_wipe_restore_gives_back_every_key_and_ttl(
    tmp_path: Path, dest: Path, sync: tuple[str, ...]
) -> None:
    with redis_server(tmp_path / "redis", *sync) as server:
        client = server.client()
        before = fill(client)
        taken = time.monotonic()
        file = backup_ok(server, dest)
        client.flushall()
        assert client.dbsize() == 0

    # The restore: a fresh redis-server started on the backup file.
    with redis_server(tmp_path / "restored", "--dir", str(dest), "--dbfilename", file.name) as new:
        after = snapshot(new.client())
    assert_restored(before, after, int((time.monotonic() - taken) * 1000))
    assert len(after) == 304


def test_restore_into_an_aof_redis_as_the_runbook_says(tmp_path: Path, dest: Path) -> None:
    """With appendonly yes Redis ignores dump.rdb at start: load it, rewrite the AOF, restart."""
    with redis_server(tmp_path / "redis", *DISKLESS) as server:
        before = fill(server.client())
        taken = time.monotonic()
        file = backup_ok(server, dest)

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(file, data / "dump.rdb")
    loader = RedisServer(data, None, "--appendonly", "no").start()
    try:
        client = loader.client(retry=Retry(NoBackoff(), 0))
        client.config_set("appendonly", "yes")
        wait_for(lambda: _aof_written(client.info("persistence")), timeout=20, what="AOF rewrite")
        client.shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # SHUTDOWN closes the connection
    finally:
        assert loader.process is not None
        loader.process.wait(timeout=10)
        loader.stop()
    (data / "dump.rdb").unlink()  # what comes back now comes from the AOF alone

    with redis_server(data, "--appendonly", "yes") as restored:
        after = snapshot(restored.client())
    assert_restored(before, after, int((time.monotonic() - taken) * 1000))


def _aof_written(info: dict[str, object]) -> bool:
    return (
        info["aof_enabled"] == 1
        and info["aof_rewrite_in_progress"] == 0
        and info["aof_rewrite_scheduled"] == 0
        and info["aof_last_bgrewrite_status"] == "ok"
    )


def test_minimal_acl_user_can_back_up_and_read_nothing(tmp_path: Path, dest: Path) -> None:
    with redis_server(tmp_path / "redis", *DISKLESS) as server:
        admin = server.client()
        fill(admin)
        admin.config_set("requirepass", "admin-pw")  # at start it would slow the readiness check
        admin.acl_setuser(
            "backup", enabled=True, passwords=["+backup-pw"], commands=["+replconf", "+sync"]
        )
        backup_ok(server, dest, "--redis-username", "backup", REDIS_PASSWORD="backup-pw")
        with pytest.raises(redis.exceptions.NoPermissionError):
            server.client(username="backup", password="backup-pw").get("config:version")


def test_wrong_password_fails_without_a_file_or_the_secret(tmp_path: Path, dest: Path) -> None:
    with redis_server(tmp_path / "redis") as server:
        server.client().config_set("requirepass", "right-pw")
        line = backup_fails(server.url, dest, env=monitor_env(REDIS_PASSWORD="wrong-pw"))
    assert "invalid username-password pair" in line or "WRONGPASS" in line
    assert "wrong-pw" not in line


def test_unreachable_redis_fails_without_a_file(dest: Path) -> None:
    line = backup_fails(f"redis://127.0.0.1:{free_port()}/0", dest)
    assert "Connection refused" in line


def test_full_disk_fails_without_a_partial_file(tmp_path: Path, dest: Path) -> None:
    with redis_server(tmp_path / "redis", *DISKLESS) as server:
        fill(server.client())
        line = backup_fails(server.url, dest, file_size_limit=256 * 1024)
    assert "cannot write" in line
    assert "File too large" in line


def test_destination_that_is_not_a_directory_is_refused(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    result = run_monitor("backup", "redis", "--dest", str(not_a_dir))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "is a file" in line
    assert not_a_dir.read_text() == "x"
