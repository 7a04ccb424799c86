"""docs/lock-libraries.md, checked with the real Python lock libraries, a real Redis and a
real daemon that reads them through the documented --pattern and ACL key pattern."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pottery
import pytest
import redis
import redis_lock

from tests.markdown import CONFIGURATION_DOC, LOCK_LIBRARIES_DOC, section, table
from tests.servers import MonitorProcess, RedisServer, monitor_env, run_monitor, wait_for

TTL = 1  # seconds (whole, for python-redis-lock): a lock older than this was renewed
THRESHOLD = 1.5
PASSWORD = "lib-mon-pw-5678"


@dataclass
class Taken:
    """A lock held through its library: `renew` is None where the library renews by itself."""

    key: str
    renew: Callable[[], object] | None
    release: Callable[[], object]


def take_redis_py(client: redis.Redis, name: str, token: str | None) -> Taken:
    # thread_local=False: the renewer is another thread (see the guide).
    lock = client.lock(f"lock:{name}", timeout=TTL, thread_local=False)
    assert lock.acquire(blocking=False, token=token)
    return Taken(f"lock:{name}", lambda: lock.extend(TTL, replace_ttl=True), lock.release)


def take_python_redis_lock(client: redis.Redis, name: str, token: str | None) -> Taken:
    # A long signal_expire keeps the lock-signal: lists until the daemon has seen past them.
    lock = redis_lock.Lock(
        client, name, expire=TTL, auto_renewal=True, id=token, signal_expire=60_000
    )
    assert lock.acquire(blocking=False)
    return Taken(f"lock:{name}", None, lock.release)


def take_pottery(client: redis.Redis, name: str, token: str | None) -> Taken:
    assert token is None, "pottery chooses its own value"
    lock = pottery.Redlock(key=name, masters={client}, auto_release_time=TTL, num_extensions=100)
    assert lock.acquire(blocking=False)
    return Taken(lock.key, lock.extend, lock.release)


@dataclass(frozen=True)
class Library:
    row: str  # its row in the guide's table
    take: Callable[[redis.Redis, str, str | None], Taken]
    custom_token: bool
    extra_keys: tuple[str, ...] = ()  # what it leaves next to the locks after a release


LIBRARIES = [
    Library("redis-py `Lock`", take_redis_py, custom_token=True),
    Library(
        "python-redis-lock",
        take_python_redis_lock,
        custom_token=True,
        extra_keys=("lock-signal:report:nightly", "lock-signal:report:hourly"),
    ),
    Library("pottery `Redlock`", take_pottery, custom_token=False),
]


def documented(library: Library) -> tuple[str, str]:
    """The guide's --pattern and ACL key pattern for the library."""
    rows = table(section(LOCK_LIBRARIES_DOC, "At a glance"))
    [row] = [row for row in rows if row["Library"] == library.row]
    return row["`--pattern`"].strip("`"), row["ACL key pattern"].strip("`")


def lock_token(now: float) -> str:
    """The guide's `<epoch-ms>:<holder>` token, unique per holder."""
    return f"{int(now * 1000)}:test-holder-{threading.get_ident()}"


class Renewer:
    """Renews the held locks every 0.3 s, as a holder's heartbeat would; released ones are
    dropped under the same mutex, so no renewal races a release."""

    def __init__(self) -> None:
        self.held: list[Taken] = []
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            with self._mutex:
                for taken in self.held:
                    if taken.renew is not None:
                        taken.renew()

    def hold(self, taken: Taken) -> Taken:
        with self._mutex:
            self.held.append(taken)
        return taken

    def release_all(self) -> None:
        with self._mutex:
            for taken in self.held:
                taken.release()
            self.held.clear()

    @contextmanager
    def running(self) -> Iterator[Renewer]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()
            self.release_all()


def daemon_view(monitor: MonitorProcess) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The daemon's last pass and its locks by key, from /locks."""
    status, body = monitor.get("/locks")
    assert status == 200
    document = json.loads(body)
    return document["pass"], {lock["key"]: lock for lock in document["locks"]}


def counts(monitor: MonitorProcess) -> tuple[float | None, float | None]:
    return monitor.value("active_locks_count"), monitor.value("stuck_locks_count")


@pytest.mark.parametrize("library", LIBRARIES, ids=lambda library: library.row.split()[0])
def test_the_library_as_documented(library: Library, redis_srv: RedisServer) -> None:
    pattern, acl_keys = documented(library)
    [acl_line] = [
        line
        for line in section(CONFIGURATION_DOC, "A minimal Redis user").splitlines()
        if line.startswith("ACL SETUSER lockmon")
    ]
    admin = redis_srv.client(decode_responses=True)
    admin.execute_command(
        *acl_line.replace(">CHANGE-ME", f">{PASSWORD}").replace("%R~lock:*", acl_keys).split()
    )
    arguments = (
        "--redis-url", redis_srv.url, "--redis-username", "lockmon", "--pattern", pattern,
        "--stuck-threshold", str(THRESHOLD), "--interval", "0.2", "--redis-timeout", "1",
    )  # fmt: skip
    env = monitor_env(LOCK_MONITOR_REDIS_PASSWORD=PASSWORD)
    client = redis_srv.client()
    tokens = [None, lock_token(time.time())] if library.custom_token else [None]
    with Renewer().running() as renewer:
        plain, *exact = (
            renewer.hold(library.take(client, name, token))
            for name, token in zip(["report:nightly", "report:hourly"], tokens, strict=False)
        )
        held = 1 + len(exact)

        # Held and renewed past the threshold (and past the TTL): stuck, by either age.
        monitor = MonitorProcess(*arguments, env=env).start()
        try:
            wait_for(lambda: counts(monitor) == (held, held), what="the locks stuck")
            last, locks = daemon_view(monitor)
            assert locks[plain.key]["age_source"] == "first_seen"
            assert locks[plain.key]["age_seconds"] > THRESHOLD > TTL
            assert 0 < locks[plain.key]["ttl_seconds"] <= TTL
            for taken, token in zip(exact, tokens[1:], strict=True):
                assert token is not None
                lock = locks[taken.key]
                assert lock["age_source"] == "value"
                taken_at = int(token.partition(":")[0]) / 1000
                assert abs(last["completed_at"] - taken_at - lock["age_seconds"]) < 0.5
        finally:
            monitor.stop()

        # A new daemon: ages from first sight start again, ages from the value do not.
        with_value = len(exact)
        monitor = MonitorProcess(*arguments, env=env).start()
        try:
            wait_for(lambda: counts(monitor) == (held, with_value), what="a pass after restart")
            _, locks = daemon_view(monitor)
            assert locks[plain.key]["age_seconds"] < THRESHOLD
            assert all(locks[taken.key]["stuck"] for taken in exact)

            # Released: nothing counted, though the library's extra keys are there.
            renewer.release_all()
            wait_for(lambda: counts(monitor) == (0, 0), what="the locks released")
            assert set(admin.scan_iter()) == set(library.extra_keys)
            assert daemon_view(monitor)[0]["keys_scanned"] == 0

            # Taken again: a new token, a new age.
            again = renewer.hold(library.take(client, "report:nightly", None))
            wait_for(lambda: counts(monitor) == (1, 0), what="the lock taken again")
            assert daemon_view(monitor)[1][again.key]["age_seconds"] < THRESHOLD
        finally:
            monitor.stop()
    assert all(PASSWORD not in line for line in monitor.log_lines)


def test_a_broader_pattern_would_count_python_redis_locks_signal_lists(
    redis_srv: RedisServer,
) -> None:
    """Why the guide says `lock:*`, not `lock*`, for python-redis-lock."""
    client = redis_srv.client()
    lock = redis_lock.Lock(client, "report:nightly", expire=TTL, signal_expire=60_000)
    assert lock.acquire(blocking=False)
    lock.release()
    broad = run_monitor("locks", "--redis-url", redis_srv.url, "--pattern", "lock*", "--json")
    documented_pattern = documented(LIBRARIES[1])[0]
    narrow = run_monitor("locks", "--redis-url", redis_srv.url, "--pattern", documented_pattern)
    # The list has no timestamp: one pass cannot age it (exit 4); the narrow pattern sees nothing.
    assert (broad.returncode, narrow.returncode) == (4, 0), broad.stderr + narrow.stderr
    [signal] = json.loads(broad.stdout)["locks"]
    assert (signal["key"], signal["kind"]) == ("lock-signal:report:nightly", "list")
    assert narrow.stdout.splitlines()[-1].startswith("0 active, 0 stuck")


def test_the_guides_values_and_ttls_are_the_libraries_own(redis_srv: RedisServer) -> None:
    """The guide's table says what each library writes: checked against the real libraries,
    with their defaults, so a new release that changes them fails here."""
    rows = {row["Library"]: row for row in table(section(LOCK_LIBRARIES_DOC, "At a glance"))}
    client = redis_srv.client()

    assert "uuid1 hex token (32 chars)" in rows["redis-py `Lock`"]["Value"]
    assert client.lock("lock:claims:redis-py", timeout=10).acquire(blocking=False)
    token = client.get("lock:claims:redis-py")
    assert token is not None
    assert len(token) == 32
    assert uuid.UUID(hex=token.decode()).version == 1

    row = rows["python-redis-lock"]
    assert "base64 id (24 chars)" in row["Value"]
    assert "`expire=` (whole seconds)" in row["TTL and renewal"]
    assert redis_lock.Lock(client, "claims:prl", expire=1.9).acquire(blocking=False)
    token = client.get("lock:claims:prl")
    assert token is not None
    assert len(token) == 24
    assert len(base64.b64decode(token, validate=True)) == 18
    assert 0 < client.pttl("lock:claims:prl") <= 1000  # 1.9 s taken as 1

    row = rows["pottery `Redlock`"]
    assert "uuid4 (36 chars)" in row["Value"]
    assert "`auto_release_time` (10 s); at most 3 `extend()`s by default" in row["TTL and renewal"]
    redlock = pottery.Redlock(key="claims", masters={client})
    assert redlock.acquire(blocking=False)
    token = client.get("redlock:claims")
    assert token is not None
    assert len(token) == 36
    assert uuid.UUID(token.decode()).version == 4
    assert 9_000 < client.pttl("redlock:claims") <= 10_000
    for _ in range(3):
        redlock.extend()
    with pytest.raises(pottery.TooManyExtensions):
        redlock.extend()
