"""Keyspace events against a real redis-server: exact counts, freshness, faults, ACLs.

Passes are 30 s apart here, so whatever the exporter shows between them comes from the
events (and from the early pass it runs once every node is subscribed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from lock_monitor.subscriber import _batch, _next_reply, hiredis_reader
from tests.markdown import CONFIGURATION_DOC, section
from tests.servers import (
    NOTIFY,
    MonitorProcess,
    RedisServer,
    monitor_env,
    redis_server,
    run_monitor,
    running_monitor,
    wait_for,
)

pytestmark = pytest.mark.integration

SLOW_PASSES = ("--interval", "30")
RELEASED, CRASHED, EVICTABLE = 20, 5, 30
HOLD = 0.3  # how long each of the RELEASED holders keeps its lock


def events(monitor: MonitorProcess) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(monitor.get("/locks")[1])["events"]
    return document


def current(monitor: MonitorProcess) -> bool:
    """Every node subscribed and the live set reconciled since: the gauges are live."""
    return events(monitor)["live"] is not None


def now_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds * 1000 + micros // 1000)


def counter(monitor: MonitorProcess, name: str, **labels: str) -> float | None:
    return monitor.value(f"lock_monitor_{name}_total", **labels)


STAMP = object()  # a lock value: the time now, in ms, as the backend writes it


@contextmanager
def followed(
    tmp_path: Path, held: dict[str, object], *args: str
) -> Iterator[tuple[RedisServer, redis.Redis, MonitorProcess]]:
    """A Redis publishing the events and holding `held` (key -> value, for 60 s), and a
    monitor over it with passes 30 s apart, once its live set is current."""
    with redis_server(tmp_path, *NOTIFY) as server:
        client = server.client()
        for key, value in held.items():
            client.set(key, now_ms(client) if value is STAMP else value, px=60_000)  # type: ignore[arg-type]
        with running_monitor("--redis-url", server.url, *SLOW_PASSES, *args) as monitor:
            wait_for(lambda: current(monitor), what="the live set reconciled")
            yield server, client, monitor


def test_a_scripted_run_is_counted_exactly(tmp_path: Path) -> None:
    memory = ("--maxmemory", "3mb", "--maxmemory-policy", "allkeys-lru")
    with (
        redis_server(tmp_path, *NOTIFY, *memory) as server,
        running_monitor("--redis-url", server.url, *SLOW_PASSES) as monitor,
    ):
        wait_for(lambda: current(monitor), what="the live set reconciled")
        scans = monitor.value("lock_monitor_scans_total", result="success")
        client = server.client()

        # RELEASED holders take a lock each, hold it, and release it with DEL; the first as
        # Redisson does: HINCRBY and PEXPIRE, then HINCRBY -1 and DEL (neither a renewal).
        taken: dict[str, float] = {}
        for i in range(RELEASED):
            key = f"lock:appointment:r{i}"
            if i == 0:
                client.hincrby(key, "holder-1:thread-1", 1)
                client.pexpire(key, 30_000)
            else:
                assert client.set(key, now_ms(client), px=30_000, nx=True)
            taken[key] = time.monotonic()
        assert not client.set("lock:appointment:r1", 1, px=30_000, nx=True)  # contention: silent
        time.sleep(HOLD)  # the holders' work
        holds = 0.0
        client.hincrby("lock:appointment:r0", "holder-1:thread-1", -1)
        for key, at in taken.items():
            client.delete(key)
            holds += time.monotonic() - at

        # CRASHED holders take a lock and never release it: it expires.
        for i in range(CRASHED):
            client.set(f"lock:appointment:c{i}", now_ms(client), px=200, nx=True)
        wait_for(
            lambda: counter(monitor, "lock_releases", outcome="expired") == CRASHED,
            what="the crashed holders' locks expiring",
        )

        # One holder renews three times with PEXPIRE, then once as redlock does (SET again).
        value = now_ms(client)
        client.set("lock:appointment:renewed", value, px=30_000, nx=True)
        for _ in range(3):
            client.pexpire("lock:appointment:renewed", 30_000)
        client.set("lock:appointment:renewed", value, px=30_000)

        # Noise against a small maxmemory with allkeys-lru evicts held locks.
        held = ["lock:appointment:renewed"] + [f"lock:appointment:e{i}" for i in range(EVICTABLE)]
        for key in held[1:]:
            client.set(key, now_ms(client), px=60_000, nx=True)
        noise = 0
        while client.exists(*held) > len(held) - 10:
            pipe = client.pipeline(transaction=False)
            for _ in range(100):
                pipe.set(f"noise:{noise}", "x" * 1000)
                noise += 1
            pipe.execute()
        remaining = client.exists(*held)
        evicted = len(held) - remaining

        wait_for(
            lambda: counter(monitor, "lock_releases", outcome="evicted") == evicted,
            what=f"{evicted} evictions counted",
        )
        assert counter(monitor, "lock_acquisitions") == RELEASED + CRASHED + len(held)
        assert counter(monitor, "lock_releases", outcome="released") == RELEASED
        assert counter(monitor, "lock_releases", outcome="expired") == CRASHED
        assert counter(monitor, "lock_renewals") == 4
        assert counter(monitor, "reconcile_corrections") == 0
        assert monitor.value("active_locks_count") == remaining
        assert monitor.value("lock_monitor_events_up") == 1

        released = "lock_monitor_lock_hold_seconds"
        assert monitor.value(f"{released}_count", outcome="released") == RELEASED
        # Each hold is timed here from SET to DEL and there from event to event: within 20 ms.
        measured = monitor.value(f"{released}_sum", outcome="released")
        assert measured == pytest.approx(holds, abs=0.02 * RELEASED)
        assert monitor.value(f"{released}_bucket", outcome="released", le="0.25") == 0
        assert monitor.value(f"{released}_bucket", outcome="released", le="1.0") == RELEASED
        # An expired lock is held from its SET until Redis removes it: its TTL, and a little.
        assert monitor.value(f"{released}_count", outcome="expired") == CRASHED
        expired_sum = monitor.value(f"{released}_sum", outcome="expired")
        assert expired_sum is not None
        assert 0.2 * CRASHED <= expired_sum <= 1.5 * CRASHED
        # Evicted locks were all taken while the events were followed: every hold is known.
        assert monitor.value(f"{released}_count", outcome="evicted") == evicted

        document = events(monitor)
        assert document["counters"]["evicted"] == evicted
        outcomes = {end["outcome"] for end in document["recent_ends"]}
        assert outcomes == {"evicted"}  # the most recent ends, newest first
        assert all(end["key"].startswith("lock:appointment:") for end in document["recent_ends"])
        assert "evicted" in monitor.get("/")[1]
        table = run_monitor("locks", "--from", monitor.base).stdout
        assert f"{RELEASED} released, {CRASHED} expired, {evicted} evicted" in table
        assert "evicted: lock:appointment:" in table
        # All of it without a pass: the events did it.
        assert monitor.value("lock_monitor_scans_total", result="success") == scans


def test_a_lock_becomes_stuck_and_is_released_within_a_second(tmp_path: Path) -> None:
    """Between passes 30 s apart: stuck-ness is judged when scraped, not when a pass ran."""
    threshold = 2.0
    with (
        redis_server(tmp_path, *NOTIFY) as server,
        running_monitor(
            "--redis-url", server.url, *SLOW_PASSES, "--stuck-threshold", str(threshold)
        ) as monitor,
    ):
        wait_for(lambda: current(monitor), what="the live set reconciled")
        scans = monitor.value("lock_monitor_scans_total", result="success")
        client = server.client()
        client.set("lock:appointment:slow", now_ms(client), px=30_000, nx=True)
        taken = time.monotonic()
        samples: list[tuple[float, float | None]] = []

        def stuck() -> bool:
            value = monitor.value("stuck_locks_count")
            samples.append((time.monotonic() - taken, value))
            return value == 1

        wait_for(stuck, timeout=threshold + 5, what="the lock stuck")
        became = samples[-1][0]
        assert threshold <= became <= threshold + 1.0, samples
        assert all(value == 0 for at, value in samples[:-1] if at < threshold - 0.1)
        assert monitor.value("active_locks_count") == 1

        client.delete("lock:appointment:slow")
        released = time.monotonic()
        wait_for(lambda: monitor.value("active_locks_count") == 0, what="the lock gone")
        assert time.monotonic() - released <= 1.0
        assert monitor.value("stuck_locks_count") == 0
        assert monitor.value("lock_monitor_scans_total", result="success") == scans


@pytest.mark.parametrize("fault", ["client kill", "restart"])
def test_a_lost_subscription_comes_back_and_the_next_pass_reconciles(
    tmp_path: Path, fault: str
) -> None:
    with followed(tmp_path, {"lock:appointment:before": STAMP}) as (server, client, monitor):
        assert monitor.value("active_locks_count") == 1
        client.set("lock:appointment:live", now_ms(client), px=60_000)
        wait_for(lambda: counter(monitor, "lock_acquisitions") == 1, what="an acquisition")
        seen_down: list[bool] = []
        if fault == "client kill":
            # Killed, and a lock taken while nobody listens: only a pass can see it.
            client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            client.set("lock:appointment:missed", now_ms(client), px=60_000)
            expected, corrections = 3, 1
        else:
            server.stop()  # no persistence: every lock is gone with it
            server.start()
            client = server.client()
            expected, corrections = 0, 2

        def back() -> bool:
            up = monitor.value("lock_monitor_events_up")
            seen_down.append(up == 0)
            return up == 1 and counter(monitor, "events_reconnects") == 1

        wait_for(back, what="re-subscribed")
        wait_for(lambda: current(monitor), what="the next pass reconciling")
        assert monitor.value("active_locks_count") == expected
        assert counter(monitor, "reconcile_corrections") == corrections
        assert counter(monitor, "lock_acquisitions") == 1  # counters survive reconnects
        client.set("lock:appointment:after", now_ms(client), px=60_000)
        wait_for(lambda: counter(monitor, "lock_acquisitions") == 2, what="events again")
    names = [event["event"] for event in monitor.events()]
    assert names.count("events_down") == 1
    assert names.count("events_live") == 2


def test_a_server_that_does_not_publish(tmp_path: Path) -> None:
    """auto: passes only, said once; on: a one-line startup error, exit 2."""
    with redis_server(tmp_path, "--notify-keyspace-events", "Ex") as server:
        client = server.client()
        client.set("lock:appointment:1", now_ms(client), px=60_000)
        with running_monitor("--redis-url", server.url, "--interval", "0.2") as monitor:
            wait_for(lambda: monitor.value("active_locks_count") == 1, what="a pass")
            wait_for(lambda: events(monitor)["state"] == "unavailable", what="said so")
            assert monitor.value("lock_monitor_events_up") == 0
            assert counter(monitor, "lock_acquisitions") is None  # never counted: absent
            assert "events unavailable (notify-keyspace-events is" in monitor.get("/")[1]
            client.delete("lock:appointment:1")
            wait_for(lambda: monitor.value("active_locks_count") == 0, what="passes still work")
        unavailable = [e for e in monitor.events() if e["event"] == "events_unavailable"]
        assert len(unavailable) == 1
        assert "'xE'" in str(unavailable[0]["reason"])  # as Redis spells it
        assert "Kg$xeh" in str(unavailable[0]["reason"])

        result = run_monitor("run", "--redis-url", server.url, "--events", "on", "--port", "0")
        assert result.returncode == 2
        (line,) = result.stderr.splitlines()
        assert line.startswith("lock-monitor: error: --events on: notify-keyspace-events is 'xE'")
        assert "K, g, $" in line


def test_events_off_subscribes_to_nothing(redis_srv: RedisServer) -> None:
    with running_monitor("--redis-url", redis_srv.url, "--events", "off") as monitor:
        wait_for(lambda: monitor.value("lock_monitor_redis_up") == 1, what="a pass")
        assert monitor.value("lock_monitor_events_up") is None
        assert events(monitor) is None
        assert redis_srv.client().pubsub_numpat() == 0


def documented_acl(password: str) -> list[str]:
    documented = section(CONFIGURATION_DOC, "A minimal Redis user")
    [line] = [line for line in documented.splitlines() if line.startswith("ACL SETUSER lockmon")]
    return line.replace(">CHANGE-ME", f">{password}").split()


@pytest.mark.parametrize("channel_allowed", [True, False])
def test_the_documented_acl_user_with_and_without_the_channel(
    tmp_path: Path, channel_allowed: bool
) -> None:
    with redis_server(tmp_path, *NOTIFY) as server:
        admin = server.client()
        command = documented_acl("mon-pw-1234")
        channels = [word for word in command if word.startswith("&")]
        assert channels == ["&__keyspace@0__:lock:appointment:*"]
        assert "+psubscribe" in command
        if not channel_allowed:
            command.remove(channels[0])
        admin.execute_command(*command)
        admin.set("lock:appointment:1", now_ms(admin), px=60_000)
        env = monitor_env(REDIS_PASSWORD="mon-pw-1234")
        args = ("--redis-url", server.url, "--redis-username", "lockmon", "--interval", "0.2")
        with running_monitor(*args, env=env) as monitor:
            wait_for(lambda: monitor.value("active_locks_count") == 1, what="a pass")
            if channel_allowed:
                # CONFIG GET is not granted: the events are trusted once one arrives. Before
                # any has, a lost subscription made again is a reconnect all the same.
                wait_for(lambda: admin.pubsub_numpat() == 1, what="subscribed")
                admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
                wait_for(lambda: admin.pubsub_numpat() == 1, what="subscribed again")
                admin.set("lock:appointment:2", now_ms(admin), px=60_000)
                wait_for(lambda: monitor.value("lock_monitor_events_up") == 1, what="events up")
                wait_for(lambda: current(monitor), what="live")
                assert counter(monitor, "lock_acquisitions") == 1
                assert counter(monitor, "events_reconnects") == 1
            else:
                wait_for(lambda: events(monitor)["state"] == "refused", what="refused")
                scans = monitor.value("lock_monitor_scans_total", result="success") or 0
                wait_for(
                    lambda: monitor.value("lock_monitor_scans_total", result="success") > scans + 3,
                    what="passes going on",
                )
                assert monitor.value("lock_monitor_events_up") == 0
        names = [event["event"] for event in monitor.events()]
        assert names.count("events_refused") == (0 if channel_allowed else 1)
        if not channel_allowed:
            refused = next(e for e in monitor.events() if e["event"] == "events_refused")
            assert "&__keyspace@0__:lock:appointment:*" in str(refused["hint"])
            assert "mon-pw-1234" not in "\n".join(monitor.log_lines)


def test_locks_held_before_the_start_end_without_a_hold_time_unless_stamped(
    tmp_path: Path,
) -> None:
    """When a lock was taken is known from its acquisition event or its holder's stamp; a
    pass's first sighting of a lock held before the start is not it (it would skew the hold
    times low after every restart)."""
    held = {"lock:appointment:token": "f81d4fae-7dec", "lock:appointment:stamped": STAMP}
    with followed(tmp_path, held) as (_, client, monitor):
        stamp = int(client.get("lock:appointment:stamped"))  # type: ignore[arg-type]
        client.delete(*held)
        released = now_ms(client)
        wait_for(
            lambda: counter(monitor, "lock_releases", outcome="released") == 2,
            what="both releases",
        )
        hold = "lock_monitor_lock_hold_seconds"
        assert monitor.value(f"{hold}_count", outcome="released") == 1
        measured = monitor.value(f"{hold}_sum", outcome="released")
        assert measured == pytest.approx((released - stamp) / 1000, abs=0.05)


def test_the_page_and_locks_from_agree_with_metrics_while_events_are_live(
    tmp_path: Path,
) -> None:
    """Passes 30 s apart: a lock that becomes stuck after the pass counts as stuck now in
    `locks --from` (exit code 3) as in /metrics, and a lock the events saw go is not listed."""
    held = {"lock:appointment:gone": "f81d4fae-7dec"}
    with followed(tmp_path, held, "--stuck-threshold", "1") as (server, client, monitor):
        assert "lock:appointment:gone" in monitor.get("/")[1]  # listed by the pass
        client.delete("lock:appointment:gone")
        client.set("lock:appointment:slow", now_ms(client), px=60_000)
        wait_for(lambda: monitor.value("stuck_locks_count") == 1, what="the lock stuck")
        document = json.loads(monitor.get("/locks")[1])
        assert document["pass"]["stuck"] == 0  # the pass came before
        assert document["locks"] == []
        page = monitor.get("/")[1]
        assert "lock:appointment:gone" not in page
        assert "<title>lock-monitor: 1 stuck, 1 active</title>" in page
        result = run_monitor("locks", "--from", monitor.base)
        assert result.returncode == 3, result.stdout + result.stderr
        assert f"1 active, 1 stuck, 0 without TTL ({server.url})" in result.stdout
        assert "the locks listed are from the pass" in result.stdout
        assert "lock:appointment:gone" not in result.stdout


def test_losing_redis_shows_at_once_not_a_pass_interval_later(tmp_path: Path) -> None:
    """The subscriber notices first: a pass runs then, fails, and the lock gauges go absent
    (never the last pass's figures as if current, nor a stuck count that merely dropped)."""
    with followed(tmp_path, {"lock:appointment:1": STAMP}) as (server, _, monitor):
        assert monitor.value("active_locks_count") == 1
        server.stop()
        wait_for(
            lambda: monitor.value("lock_monitor_redis_up") == 0,
            timeout=5,
            what="redis_up 0 within seconds (passes are 30 s apart)",
        )
        metrics = monitor.metrics()
        assert metrics.value("active_locks_count") is None
        assert metrics.value("stuck_locks_count") is None
        assert metrics.value("lock_monitor_events_up") == 0


def test_the_subscriber_takes_whole_socket_reads_from_hiredis(redis_srv: RedisServer) -> None:
    """The fast path reaches into redis-py's parser (no public way): with the pinned redis-py
    and hiredis it must be found, or the subscriber is silently several times slower."""
    client = redis_srv.client()
    pubsub = client.pubsub()
    pubsub.psubscribe("__keyspace@0__:lock:*")
    assert _next_reply(pubsub, 5)[0] == b"psubscribe"
    reader = hiredis_reader(pubsub.connection)
    assert reader is not None, "redis-py's hiredis parser moved: events.hiredis_reader"
    with client.pipeline(transaction=True) as pipe:  # published at once, written at once
        for i in range(50):
            pipe.publish(f"__keyspace@0__:lock:{i}", "set")
        pipe.execute()

    def sent() -> bool:
        (subscriber,) = client.client_list(_type="pubsub")
        return subscriber["omem"] == "0" and subscriber["obl"] == "0"

    wait_for(sent, what="Redis done writing to the subscriber")
    batch = _batch(_next_reply(pubsub, 5), reader)
    assert len(batch) == 50
    assert [message[2] for message in batch][-1] == b"__keyspace@0__:lock:49"
    pubsub.reset()
