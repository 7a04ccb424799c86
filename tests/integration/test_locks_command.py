"""`lock-monitor locks`: one pass now, printed for a person or a script."""

import base64
import fcntl
import json
import os
import pty
import signal
import ssl
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lock_monitor.views import UNKNOWN_AGE_WHY
from tests.resp import Error, fake_redis
from tests.servers import (
    Certificates,
    MonitorProcess,
    RedisServer,
    cli_error,
    free_port,
    make_certificates,
    mixed_locks,
    monitor_command,
    monitor_env,
    run_monitor,
    running_monitor,
    wait_for,
    web_config_file,
)


def test_table_stuck_first_then_oldest_and_exit_3_when_some_are_stuck(
    redis_srv: RedisServer,
) -> None:
    client = redis_srv.client()
    mixed_locks(client, stuck=2, fresh=2)
    client.set("lock:appointment:n0", "1764180000000:batch-job")  # no TTL, age from the value
    result = run_monitor("locks", "--redis-url", redis_srv.url)
    assert result.returncode == 3, result.stderr
    header, *rows, summary = result.stdout.splitlines()
    assert header.split() == ["KEY", "AGE", "TTL", "STUCK", "VALUE"]
    assert len(rows) == 5
    ages = [float(row.split()[1].rstrip("s")) for row in rows]
    assert ages == sorted(ages, reverse=True)
    assert [row.split()[3] for row in rows] == ["yes", "yes", "yes", "no", "no"]
    ttls = {row.split()[0]: row.split()[2] for row in rows}
    assert ttls["lock:appointment:n0"] == "never"
    assert ttls["lock:appointment:f0"].endswith("s")
    assert summary.startswith("5 active, 3 stuck, 1 without TTL")


# `lock-monitor ARGS` as `python -m lock_monitor` runs it, then the modules it loaded, on stderr.
RUN_THEN_MODULES = """
import json, sys
from lock_monitor.cli import main
sys.argv[0] = "lock-monitor"
try:
    main()
finally:
    print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""
# What the daemon, its page and the other commands need, and a pass from Redis does not.
NOT_FOR_LOCKS = (
    "lock_monitor.backup",
    "lock_monitor.charts",
    "lock_monitor.page",
    "lock_monitor.cli.backup",
    "lock_monitor.cli.demo",
    "lock_monitor.cli.run",
    "lock_monitor.daemon",
    "lock_monitor.demo",
    "lock_monitor.byage",
    "lock_monitor.events",
    "lock_monitor.eventstream",
    "lock_monitor.livecounts",
    "lock_monitor.liveset",
    "lock_monitor.metrics",
    "lock_monitor.reconcile",
    "lock_monitor.subscriber",
    "lock_monitor.web",
    "lock_monitor.httpserver",
    "lock_monitor.webconfig",
    "bcrypt",
    "prometheus_client",
    "urllib.request",
    "yaml",
)


def test_locks_loads_neither_the_daemon_nor_the_other_commands(redis_srv: RedisServer) -> None:
    """Starting Python and importing is part of the one-shot's wall time: it imports what a
    pass needs, not the web server, the keyspace events or the backup code."""
    mixed_locks(redis_srv.client(), stuck=1, fresh=1)
    for args in ([], ["--json"], ["--all"]):
        command = [sys.executable, "-c", RUN_THEN_MODULES, "locks", "--redis-url", redis_srv.url]
        result = subprocess.run(
            [*command, *args], env=monitor_env(), capture_output=True, text=True, check=False
        )
        assert result.returncode == 3, result.stderr  # the pass ran: one lock is stuck
        modules = set(json.loads(result.stderr.splitlines()[-1]))
        assert "lock_monitor.passes" in modules
        loaded = {module.partition(".")[0] for module in modules} | modules
        loaded |= {module.rpartition(".")[0] for module in modules}  # packages of submodules
        assert sorted(loaded & set(NOT_FOR_LOCKS)) == [], args


def test_exit_0_when_nothing_is_stuck(redis_srv: RedisServer) -> None:
    mixed_locks(redis_srv.client(), stuck=0, fresh=2)
    assert run_monitor("locks", "--redis-url", redis_srv.url).returncode == 0


def test_one_pass_says_ages_it_cannot_know_are_unknown_never_0(redis_srv: RedisServer) -> None:
    """Random tokens (redis-py, redlock, pottery...): one pass cannot age them."""
    mixed_locks(redis_srv.client(), stuck=1, fresh=0, no_ttl=2)
    table = run_monitor("locks", "--redis-url", redis_srv.url)
    assert table.returncode == 3, table.stderr  # the one lock known to be stuck
    _, *rows, summary, why = table.stdout.splitlines()
    unknown = [row.split() for row in rows if row.startswith("lock:appointment:n")]
    assert [row[1:4] for row in unknown] == [["unknown", "never", "?"]] * 2
    assert summary.startswith("3 active, 1 stuck, 2 without TTL")
    assert why == f"2 of unknown age: {UNKNOWN_AGE_WHY}"
    assert "--from http://HOST:9150" in why

    as_json = run_monitor("locks", "--json", "--redis-url", redis_srv.url)
    document = json.loads(as_json.stdout)
    tokens = [lock for lock in document["locks"] if lock["value"] == "token"]
    assert [(t["age_seconds"], t["age_source"], t["stuck"]) for t in tokens] == [
        (None, "unknown", None)
    ] * 2
    assert document["pass"]["unknown_age"] == 2
    assert as_json.stderr == f"lock-monitor: note: 2 of unknown age: {UNKNOWN_AGE_WHY}\n"


def test_exit_4_when_none_is_known_to_be_stuck_but_some_ages_are_unknown(
    redis_srv: RedisServer,
) -> None:
    """A script must not read "none stuck" from locks one pass cannot age."""
    mixed_locks(redis_srv.client(), stuck=0, fresh=1, no_ttl=1)
    for args in ([], ["--json"], ["--stuck"]):
        result = run_monitor("locks", "--redis-url", redis_srv.url, *args)
        assert result.returncode == 4, result.stderr
        assert f"1 of unknown age: {UNKNOWN_AGE_WHY}" in result.stdout + result.stderr


def test_json_and_stuck_only(redis_srv: RedisServer) -> None:
    mixed_locks(redis_srv.client(), stuck=3, fresh=4)
    result = run_monitor("locks", "--json", "--stuck", "--redis-url", redis_srv.url)
    assert result.returncode == 3, result.stderr
    document = json.loads(result.stdout)
    assert (document["pass"]["active"], document["pass"]["stuck"]) == (7, 3)
    assert len(document["locks"]) == 3
    assert all(lock["stuck"] and lock["age_source"] == "value" for lock in document["locks"])


def test_the_oldest_are_printed_and_every_lock_is_counted(redis_srv: RedisServer) -> None:
    mixed_locks(redis_srv.client(), stuck=3, fresh=4)
    result = run_monitor("locks", "--limit", "2", "--redis-url", redis_srv.url)
    assert result.returncode == 3, result.stderr  # some are stuck
    _, *rows, summary, note = result.stdout.splitlines()
    assert [row.split()[3] for row in rows] == ["yes", "yes"]
    assert summary.startswith("7 active, 3 stuck")
    assert note == "(the oldest 2 of 7 locks: --limit N for more, --all for every lock)"
    document = json.loads(
        run_monitor("locks", "--json", "--limit", "0", "--redis-url", redis_srv.url).stdout
    )
    assert (document["pass"]["active"], document["locks"]) == (7, [])


def test_all_streams_every_lock_as_json_lines(redis_srv: RedisServer) -> None:
    mixed_locks(redis_srv.client(), stuck=3, fresh=150)
    result = run_monitor("locks", "--all", "--scan-count", "10", "--redis-url", redis_srv.url)
    assert result.returncode == 3, result.stderr  # some are stuck
    locks = [json.loads(line) for line in result.stdout.splitlines()]
    assert len({lock["key"] for lock in locks}) == len(locks) == 153
    assert sum(lock["stuck"] for lock in locks) == 3
    stuck = run_monitor("locks", "--all", "--stuck", "--redis-url", redis_srv.url)
    assert [json.loads(line)["stuck"] for line in stuck.stdout.splitlines()] == [True] * 3


def test_unreachable_redis_is_one_line_and_exit_1() -> None:
    env = monitor_env(LOCK_MONITOR_REDIS_URL=f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    line = cli_error(run_monitor("locks", "--redis-timeout", "1", env=env))
    assert "cannot read locks from redis://127.0.0.1:" in line
    assert line.count("redis://") == 1  # the target once, not again as the node
    assert "hunter2" not in line


def test_a_cluster_node_in_standalone_mode_says_to_use_cluster_mode(
    cluster_node: RedisServer,
) -> None:
    node = cluster_node
    mixed_locks(node.client(), stuck=2, fresh=8)
    line = cli_error(run_monitor("locks", "--redis-url", node.url))
    assert line.startswith(f"lock-monitor: error: cannot read locks from {node.url}: ")
    assert "ClusterCrossSlotError" in line
    assert line.endswith("this looks like a Redis Cluster node: use --redis-mode cluster")
    fixed = run_monitor("locks", "--json", "--redis-mode", "cluster", "--redis-url", node.url)
    assert fixed.returncode == 3, fixed.stderr  # the 2 stuck locks
    assert json.loads(fixed.stdout)["pass"]["active"] == 10


ESCAPES = "\x1b]0;owned\x07\x1b[2J\r\nlock:appointment:fake  0.0s  never  no  x\x9b"


def test_table_shows_control_characters_as_escapes_and_json_keeps_them(
    redis_srv: RedisServer,
) -> None:
    client = redis_srv.client()
    now_ms = client.time()[0] * 1000
    key, value = ("lock:appointment:" + ESCAPES).encode(), (f"{now_ms}:" + ESCAPES).encode()
    client.set(key, value, px=30_000)
    result = run_monitor("locks", "--redis-url", redis_srv.url)
    assert result.returncode == 0, result.stderr
    [_, row, _] = result.stdout.splitlines()  # header, one row, the counts: no fake row
    assert "\x1b" not in result.stdout
    assert "\r" not in result.stdout
    assert row.startswith("lock:appointment:\\x1b]0;owned\\x07\\x1b[2J\\r\\nlock:appointment:fake")
    document = json.loads(run_monitor("locks", "--json", "--redis-url", redis_srv.url).stdout)
    assert document["locks"][0]["key"].encode() == key


def test_a_server_error_with_escapes_is_printed_escaped() -> None:
    def handler(command: list[bytes]) -> object:
        return Error("ERR \x1b]0;owned\x07\x1b[2J") if command[0] != b"CLIENT" else "OK"

    with fake_redis(handler) as server:
        line = cli_error(run_monitor("locks", "--redis-url", server.url))
    assert "\x1b" not in line
    assert "\x07" not in line
    assert line.endswith("ResponseError: \\x1b]0;owned\\x07\\x1b[2J")


def test_from_the_daemon_ages_from_first_sight_are_known(redis_srv: RedisServer) -> None:
    client = redis_srv.client()
    mixed_locks(client, stuck=0, fresh=0, no_ttl=1)  # n0: a random token, no TTL
    args = ("--redis-url", redis_srv.url, "--interval", "0.2", "--stuck-threshold", "1")
    with running_monitor(*args) as daemon:
        wait_for(lambda: daemon.value("stuck_locks_count") == 1, what="the token lock stuck")
        table = run_monitor("locks", "--from", daemon.base)
        as_json = run_monitor("locks", "--json", "--stuck", "--from", daemon.base + "/locks")
        _, served = daemon.get("/locks")
    assert table.returncode == as_json.returncode == 3, table.stderr + as_json.stderr
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[1:-1]}
    assert rows["lock:appointment:n0"][3] == "yes", table.stdout
    assert float(rows["lock:appointment:n0"][1].rstrip("s")) >= 1.0  # shown to 0.1 s
    document = json.loads(as_json.stdout)
    assert set(document) == set(json.loads(served))  # the daemon's own document
    [stuck] = document["locks"]
    assert (stuck["key"], stuck["age_source"], stuck["stuck"]) == (
        "lock:appointment:n0",
        "first_seen",
        True,
    )


PASSWORD = "scrape-pw"


def secured_daemon(
    redis_srv: RedisServer, certs: Certificates, tmp_path: Path, **tls: object
) -> MonitorProcess:
    """A daemon behind --web-config-file: HTTPS, and the user `prometheus` with PASSWORD."""
    mixed_locks(redis_srv.client(), stuck=1, fresh=1)
    config = web_config_file(tmp_path, certs, PASSWORD, **tls)
    context = ssl.create_default_context(cafile=str(certs.ca))
    if tls:
        context.load_cert_chain(certs.client_cert, certs.client_key)
    daemon = MonitorProcess(
        "--redis-url", redis_srv.url, "--interval", "0.2", "--web-config-file", str(config),
        tls=context,
        authorization="Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode(),
    ).start()  # fmt: skip
    wait_for(lambda: daemon.value("active_locks_count") == 2, what="a first pass")
    return daemon


def test_from_a_daemon_with_tls_and_basic_auth(redis_srv: RedisServer, tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "certs")
    daemon = secured_daemon(redis_srv, certs, tmp_path)
    ca = ("--from-ca-file", str(certs.ca))
    user = {"LOCK_MONITOR_FROM_USERNAME": "prometheus", "LOCK_MONITOR_FROM_PASSWORD": PASSWORD}
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    try:
        unverified = cli_error(run_monitor("locks", "--from", daemon.base, env=monitor_env(**user)))
        no_user = cli_error(run_monitor("locks", "--from", daemon.base, *ca))
        from_env = run_monitor("locks", "--from", daemon.base, *ca, env=monitor_env(**user))
        from_file = run_monitor(
            "locks", "--json", "--from", daemon.base, *ca, "--from-username", "prometheus",
            "--from-password-file", str(password_file),
        )  # fmt: skip
        in_url = f"https://prometheus:{PASSWORD}@127.0.0.1:{daemon.port}"
        url_from_env = run_monitor(
            "locks", env=monitor_env(LOCK_MONITOR_FROM=in_url, LOCK_MONITOR_FROM_CA_FILE=ca[1])
        )
        url_on_argv = run_monitor("locks", "--from", in_url, *ca)
    finally:
        daemon.stop()
    assert "certificate verify failed" in unverified
    assert unverified.endswith("with --from-ca-file")
    assert "HTTP 401: the daemon wants a user and password: LOCK_MONITOR_FROM_USERNAME" in no_user
    for result in (from_env, from_file, url_from_env):
        assert result.returncode == 3, result.stderr  # the stuck lock, read over HTTPS
    assert from_env.stdout.splitlines()[-1].startswith("2 active, 1 stuck")
    assert json.loads(from_file.stdout)["pass"]["stuck"] == 1
    assert url_on_argv.returncode == 2
    assert "shows in `ps`" in url_on_argv.stderr
    for result in (from_env, from_file, url_from_env, url_on_argv):
        assert PASSWORD not in result.stdout + result.stderr


def test_from_a_daemon_that_asks_for_a_client_certificate(
    redis_srv: RedisServer, tmp_path: Path
) -> None:
    certs = make_certificates(tmp_path / "certs")
    daemon = secured_daemon(
        redis_srv, certs, tmp_path,
        client_auth_type="RequireAndVerifyClientCert", client_ca_file=str(certs.ca),
    )  # fmt: skip
    args = ("locks", "--from", daemon.base, "--from-ca-file", str(certs.ca))
    env = monitor_env(LOCK_MONITOR_FROM_USERNAME="prometheus", LOCK_MONITOR_FROM_PASSWORD=PASSWORD)
    try:
        without = run_monitor(*args, env=env)
        client = (
            "--from-cert-file",
            str(certs.client_cert),
            "--from-key-file",
            str(certs.client_key),
        )
        with_certificate = run_monitor(*args, *client, env=env)
    finally:
        daemon.stop()
    assert cli_error(without).startswith(
        f"lock-monitor: error: cannot read locks from {daemon.base}"
    )
    assert with_certificate.returncode == 3, with_certificate.stderr


def test_from_a_daemon_that_cannot_read_redis_exits_1_with_its_last_pass(
    redis_srv: RedisServer,
) -> None:
    mixed_locks(redis_srv.client(), stuck=1, fresh=1)
    args = ("--redis-url", redis_srv.url, "--interval", "0.2", "--redis-timeout", "1")
    with running_monitor(*args) as daemon:
        wait_for(lambda: daemon.value("active_locks_count") == 2, what="a first pass")
        redis_srv.stop()
        wait_for(lambda: daemon.value("lock_monitor_redis_up") == 0, what="Redis lost")
        result = run_monitor("locks", "--from", daemon.base)
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1].startswith("2 active, 1 stuck")
    [warning] = result.stderr.splitlines()
    assert warning.startswith("lock-monitor: warning: the daemon cannot read Redis (")
    assert warning.endswith(" ago, not the current state")


def test_from_bad_or_unreachable_urls() -> None:
    port = free_port()
    env = monitor_env(LOCK_MONITOR_FROM=f"http://user:s3cret@127.0.0.1:{port}")
    line = cli_error(run_monitor("locks", env=env))
    assert line.startswith(
        f"lock-monitor: error: cannot read locks from http://127.0.0.1:{port}/locks: "
    )
    assert "s3cret" not in line
    refused = run_monitor("locks", "--from", "file:///etc/passwd")
    assert refused.returncode == 2
    assert "is not an http(s):// URL" in refused.stderr


def test_from_something_that_is_not_a_daemon(redis_srv: RedisServer) -> None:
    with running_monitor("--redis-url", redis_srv.url, "--interval", "0.2") as daemon:
        line = cli_error(run_monitor("locks", "--from", daemon.base + "/metrics"))
    assert line.endswith("/metrics/locks: HTTP 404")


def read_until(fd: int, wanted: str, seen: list[str], timeout: float = 15) -> str:
    """What the terminal showed, read until `wanted` appears in the latest screen."""

    def screen() -> str | None:
        data = os.read(fd, 65536).decode(errors="replace")
        seen.append(data)
        latest = "".join(seen).rsplit("\x1b[1;1H", 1)[-1]  # after the last clear
        return latest if wanted in latest else None

    return wait_for(screen, timeout=timeout, what=f"{wanted!r} on the terminal")


def exit_code_within(pid: int, timeout: float) -> int:
    """The exit code of the child `pid`, which must exit within `timeout` seconds."""

    def reaped() -> tuple[int, int] | None:
        done, status = os.waitpid(pid, os.WNOHANG)
        return (done, status) if done else None

    _, status = wait_for(reaped, timeout=timeout, what=f"process {pid} exiting")
    return os.waitstatus_to_exitcode(status)


@contextmanager
def on_a_terminal(*args: str, rows: int, columns: int) -> Iterator[tuple[int, int]]:
    """The CLI on a pseudo-terminal of that size: its pid and the terminal's side to read."""
    env = {k: v for k, v in monitor_env().items() if k not in ("COLUMNS", "LINES")}
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI on a terminal of its own, sized before it starts
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        command = monitor_command(*args)
        os.execve(command[0], command, env)  # noqa: S606 (no shell: the argv as is)
    os.set_blocking(fd, False)
    try:
        yield pid, fd
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass  # it exited, and was reaped
        os.close(fd)


def test_watch_refreshes_in_place_until_ctrl_c(redis_srv: RedisServer) -> None:
    client = redis_srv.client()
    mixed_locks(client, stuck=1, fresh=1)
    args = ("locks", "--watch", "--every", "0.2", "--redis-url", redis_srv.url)
    seen: list[str] = []
    with on_a_terminal(*args, rows=40, columns=200) as (pid, fd):
        first = read_until(fd, "2 active, 1 stuck", seen)
        assert first.splitlines()[0].startswith("Every 0.2s: lock-monitor locks (redis://")
        mixed_locks(client, stuck=2, fresh=1)  # a second stuck lock
        later = read_until(fd, "3 active, 2 stuck", seen)
        stuck_first = [line.split()[3] for line in later.splitlines()[3:6]]
        assert stuck_first == ["yes", "yes", "no"]
        os.write(fd, b"\x03")  # Ctrl-C, as the terminal sends it
        assert exit_code_within(pid, timeout=5) == 0
        assert "Traceback" not in "".join(seen)


def test_watch_fits_a_small_terminal_as_watch_does(redis_srv: RedisServer) -> None:
    """80x12, long keys and values: nothing wraps or scrolls the header and stuck rows away."""
    client = redis_srv.client()
    mixed_locks(client, stuck=2, fresh=0)
    now_ms = client.time()[0] * 1000
    for i in range(12):
        client.set(f"lock:appointment:{'long-' * 20}{i}", f"{now_ms}:{'worker-' * 20}", px=30_000)
    args = ("locks", "--watch", "--every", "0.2", "--redis-url", redis_srv.url)
    with on_a_terminal(*args, rows=12, columns=80) as (_, fd):
        latest = read_until(fd, "14 active, 2 stuck", [])
    lines = latest.replace("\r", "").split("\n")
    assert len(lines) == 12
    assert max(len(line) for line in lines) == 80
    assert lines[0].startswith("Every 0.2s: lock-monitor locks (redis://")
    stuck = {"lock:appointment:s0", "lock:appointment:s1"}
    assert {line.split()[0] for line in lines[3:5]} == stuck  # first, in sight
    assert lines[-2] == "… 7 more"  # 14 locks, 7 rows shown
    assert lines[-1].startswith("14 active, 2 stuck, 0 without TTL")
