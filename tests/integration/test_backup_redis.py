"""`lock-monitor backup redis` against a real redis-server, and the documented restore."""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from lock_monitor.backup.redis_rdb import CLUSTER_NAME, RdbCheck
from tests.servers import (
    ClusterServers,
    RedisServer,
    cli_error,
    cli_record,
    cli_records,
    free_port,
    make_certificates,
    monitor_env,
    redis_server,
    require_tls_build,
    run_monitor,
    set_locks,
    tls_arguments,
    wait_for,
)

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


def test_backup_over_tls_reads_the_rdb_through_the_tls_socket(tmp_path: Path, dest: Path) -> None:
    """Under TLS the socket taken from redis-py's connection is a TLS one: the RDB read through it
    is the decrypted stream, checked and loadable."""
    require_tls_build()
    certs = make_certificates(tmp_path / "certs")
    tls_port = free_port()
    tls = tls_arguments(certs, tls_port, mutual=False)
    with redis_server(tmp_path / "redis", *tls, *DISKLESS) as server:
        before = fill(server.client())
        taken = time.monotonic()
        result = run_monitor(
            "backup", "redis", "--redis-url", f"rediss://127.0.0.1:{tls_port}/0",
            "--redis-ca-file", str(certs.ca), "--dest", str(dest),
        )  # fmt: skip
        file = Path(cli_record(result, "redis_backup_written")["file"])

    with redis_server(tmp_path / "restored", "--dir", str(dest), "--dbfilename", file.name) as new:
        after = snapshot(new.client())
    assert_restored(before, after, int((time.monotonic() - taken) * 1000))


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


def test_a_backup_removes_the_temp_files_killed_backups_left(tmp_path: Path, dest: Path) -> None:
    """Each run writes a new stamp: the temp files of killed runs are found by their pattern."""
    for name in (
        ".redis-backup-20260101T020000Z.rdb.k2_x9q0a.tmp",
        ".redis-backup-20260101T020000Z-slots-0-5460.rdb.abcdefgh.tmp",
    ):
        (dest / name).write_bytes(b"half an RDB")
    with redis_server(tmp_path / "redis", *DISKLESS) as server:
        fill(server.client())
        backup_ok(server, dest)  # the new backup alone is left in dest


def test_destination_that_is_not_a_directory_is_refused(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    result = run_monitor("backup", "redis", "--dest", str(not_a_dir))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "is a file" in line
    assert not_a_dir.read_text() == "x"


# --- Redis Cluster: one file per primary, one series per slot range ----------------------

CLUSTER_LOCKS = 300


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterServers]:
    servers = ClusterServers(tmp_path / "cluster")
    try:
        servers.start()
        client = servers.client()
        set_locks(client, [f"lock:appointment:{i}" for i in range(CLUSTER_LOCKS)], age=1)
        client.close()
        yield servers
    finally:
        servers.stop()


def slot_series(cluster: ClusterServers) -> dict[str, tuple[int, int]]:
    """host:port -> (first, last) slot of each primary, as CLUSTER NODES reports it now."""
    nodes = cluster.live()[0].client().cluster("NODES")
    return {
        address.split("@")[0]: (int(node["slots"][0][0]), int(node["slots"][0][-1]))
        for address, node in nodes.items()
        if "master" in node["flags"] and node["slots"] and "fail" not in node["flags"]
    }


def cluster_backup(cluster: ClusterServers, dest: Path) -> dict[str, dict[str, Any]]:
    """Back the cluster up; series (`slots-<first>-<last>`) -> the JSON line of its file."""
    result = run_monitor(
        "backup", "redis", "--redis-mode", "cluster", "--redis-url", cluster.seed_url,
        "--dest", str(dest),
    )  # fmt: skip
    records = cli_records(result, "redis_backup_written")
    by_series = {}
    for record in records:
        match = CLUSTER_NAME.fullmatch(Path(record["file"]).name)
        assert match, record["file"]
        by_series[match["series"]] = record
    assert len(by_series) == len(records)
    return by_series


def assert_holds_exactly(file: Path, first: int, last: int) -> None:
    """A sound RDB holding the locks of slots first..last and no other (keys of 17-20 bytes are
    stored uncompressed, after their length byte)."""
    data = file.read_bytes()
    check = RdbCheck()
    check.update(data)
    check.verify()
    keys = [f"lock:appointment:{i}".encode() for i in range(CLUSTER_LOCKS)]
    held = {key for key in keys if bytes([len(key)]) + key in data}
    assert held == {key for key in keys if first <= key_slot(key) <= last}
    assert held


def test_cluster_backup_is_one_file_per_primary_named_by_its_slots(
    cluster: ClusterServers, dest: Path
) -> None:
    before = slot_series(cluster)
    first = cluster_backup(cluster, dest)
    assert {record["node"]: series for series, record in first.items()} == {
        node: f"slots-{low}-{high}" for node, (low, high) in before.items()
    }
    for series, record in first.items():
        assert record["slots"] == series.removeprefix("slots-")
        assert_holds_exactly(Path(record["file"]), *before[record["node"]])
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        Path(r["file"]).name for r in first.values()
    )

    # A primary dies and its replica takes over: the new primary continues the same series;
    # files of series no primary serves any more age out (here: long past --keep-days).
    vanished = ("redis-backup-20200101T000000Z-slots-0-99.rdb",
                "redis-backup-20200101T000000Z-127.0.0.1_7000.rdb")  # fmt: skip
    for name in vanished:
        (dest / name).write_bytes(b"x")
    victim_address = next(node for node in before if node != f"127.0.0.1:{cluster.servers[0].port}")
    victim = next(s for s in cluster.servers if f"127.0.0.1:{s.port}" == victim_address)
    victim.stop()
    cluster.wait_healthy()
    after = slot_series(cluster)
    assert after.keys() != before.keys()
    assert sorted(after.values()) == sorted(before.values())

    second = cluster_backup(cluster, dest)
    assert second.keys() == first.keys()
    series = f"slots-{before[victim_address][0]}-{before[victim_address][1]}"
    assert second[series]["node"] not in (victim_address, first[series]["node"])
    assert_holds_exactly(Path(second[series]["file"]), *before[victim_address])
    assert sorted(name for r in second.values() for name in r["deleted"]) == sorted(vanished)
    assert len(list(dest.iterdir())) == 6  # both runs' files, all within --keep-days
