"""Connecting to Redis as one server, a Cluster or a Sentinel-managed primary.

Whatever the mode, the scanner sees a list of nodes, each a plain `redis.Redis`: one for a
single server or Sentinel's current primary, one per primary in a Cluster (re-read on every
pass, so resharding and failover are followed without a restart).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from lock_monitor.config import RedisSettings

Node = tuple[str, redis.Redis]


def _no_touch(connection: Any) -> None:
    """Ask Redis (7.2+) not to count the monitor's reads as accesses for LRU/LFU eviction.

    Older servers, or an ACL without `+client|no-touch`, refuse: the monitor works without it.
    """
    connection.on_connect()
    try:
        connection.send_command("CLIENT", "NO-TOUCH", "ON")
        connection.read_response()
    except redis.ResponseError:
        pass


def _cluster_no_touch(connection: Any) -> None:
    # The cluster client has already run on_connect (AUTH, READONLY) before calling us.
    try:
        connection.send_command("CLIENT", "NO-TOUCH", "ON")
        connection.read_response()
    except redis.ResponseError:
        pass


def connection_options(settings: RedisSettings) -> dict[str, Any]:
    """Keyword arguments shared by every client: auth, TLS, timeouts, no hidden retries.

    The monitor's own loop retries with backoff; a retry inside redis-py would only hide
    an outage for longer.
    """
    options: dict[str, Any] = {
        "socket_timeout": settings.timeout,
        "socket_connect_timeout": settings.timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 30,
    }
    if settings.username:
        options["username"] = settings.username
    if settings.password:
        options["password"] = settings.password
    if _uses_tls(settings):
        options["ssl_ca_certs"] = settings.ca_file
        options["ssl_certfile"] = settings.cert_file
        options["ssl_keyfile"] = settings.key_file
        if settings.tls_insecure:
            options["ssl_cert_reqs"] = "none"
            options["ssl_check_hostname"] = False
    return options


def _uses_tls(settings: RedisSettings) -> bool:
    return bool(settings.url and settings.url.startswith("rediss://")) or bool(
        settings.mode == "sentinel" and (settings.ca_file or settings.tls_insecure)
    )


@dataclass
class Target:
    """The Redis being watched."""

    settings: RedisSettings
    client: Any  # redis.Redis, or RedisCluster in cluster mode

    def nodes(self) -> list[Node]:
        if isinstance(self.client, RedisCluster):
            return [
                (node.name, self.client.get_redis_connection(node))
                for node in self.client.get_primaries()  # type: ignore[no-untyped-call]
            ]
        return [(self.settings.target(), self.client)]

    def close(self) -> None:
        self.client.close()


def connect(settings: RedisSettings) -> Target:
    """Build the client; connections open lazily, so this works while Redis is down."""
    options = connection_options(settings)
    if settings.mode == "cluster":
        client: Any = RedisCluster.from_url(
            settings.url or "", redis_connect_func=_cluster_no_touch, **options
        )
    elif settings.mode == "sentinel":
        sentinel_options: dict[str, Any] = {"socket_timeout": settings.timeout}
        if settings.sentinel_password:
            sentinel_options["password"] = settings.sentinel_password
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(settings.sentinels), sentinel_kwargs=sentinel_options, **options
        )
        client = sentinel.master_for(  # type: ignore[no-untyped-call]
            settings.sentinel_master or "mymaster", redis_connect_func=_no_touch
        )
    else:
        client = redis.Redis.from_url(settings.url or "", redis_connect_func=_no_touch, **options)
    return Target(settings, client)
