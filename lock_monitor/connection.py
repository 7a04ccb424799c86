"""Connecting to Redis as one server, a Cluster or a Sentinel-managed primary.

Whatever the mode, the scanner sees a list of nodes, each a plain `redis.Redis`: one for a
single server or Sentinel's current primary, one per primary in a Cluster. The list is
re-read at the start of every pass (CLUSTER SLOTS, or the Sentinels' answer), so
resharding, scaling out and failover are followed without a restart.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.connection import parse_url
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

from lock_monitor.config import RedisSettings

Node = tuple[str, redis.Redis]


def _no_touch(connection: Any) -> None:
    """Ask Redis (7.2+) not to count the monitor's reads as accesses for LRU/LFU eviction.

    Older servers, or an ACL without `+client|no-touch`, refuse: the monitor works without it.
    """
    try:
        connection.send_command("CLIENT", "NO-TOUCH", "ON")
        connection.read_response()
    except redis.ResponseError:
        pass


def _connect_no_touch(connection: Any) -> None:
    """redis-py's hook for a plain connection: it replaces on_connect (AUTH, SELECT)."""
    connection.on_connect()
    _no_touch(connection)


def uses_tls(settings: RedisSettings) -> bool:
    """rediss:// means TLS. Sentinel mode takes no host from the URL, so a TLS option is enough."""
    if settings.url and settings.url.startswith("rediss://"):
        return True
    return settings.mode == "sentinel" and bool(
        settings.ca_file or settings.cert_file or settings.tls_insecure
    )


def tls_options(settings: RedisSettings) -> dict[str, Any]:
    """Verification is on unless --redis-tls-insecure; the client pair is for mutual TLS."""
    options: dict[str, Any] = {
        "ssl_ca_certs": settings.ca_file,
        "ssl_certfile": settings.cert_file,
        "ssl_keyfile": settings.key_file,
    }
    if settings.tls_insecure:
        options.update(ssl_cert_reqs="none", ssl_check_hostname=False)
    return options


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
    if uses_tls(settings):
        options.update(tls_options(settings))
    return options


def sentinel_options(settings: RedisSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """(options for the Sentinels, options for the primary they name).

    The Sentinels have a password of their own; TLS, when on, applies to both. From the
    URL only the credentials and the database count: the Sentinels say where the primary is.
    """
    from_url = parse_url(settings.url) if settings.url else {}  # type: ignore[no-untyped-call]
    for key in ("host", "port", "connection_class"):
        from_url.pop(key, None)
    primary = {**from_url, **connection_options(settings)}
    sentinels = {key: primary[key] for key in ("socket_timeout", "socket_connect_timeout", "retry")}
    if settings.sentinel_password:
        sentinels["password"] = settings.sentinel_password
    if uses_tls(settings):
        primary["ssl"] = True
        sentinels.update(ssl=True, **tls_options(settings))
    return sentinels, primary


def no_primary_reasons(pool: SentinelConnectionPool) -> str:
    """Why no Sentinel named a primary, one short reason per Sentinel.

    redis-py's own message embeds the repr of every client; this asks each Sentinel again
    (only after a failure) to say what went wrong in words.
    """
    reasons = []
    for sentinel in pool.sentinel_manager.sentinels:
        options = sentinel.connection_pool.connection_kwargs
        try:
            state = sentinel.sentinel_master(pool.service_name)
            problem = "primary is down" if state["is_sdown"] or state["is_odown"] else "no primary"
        except redis.RedisError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        reasons.append(f"{options['host']}:{options['port']}: {problem}")
    return f"no Sentinel names a primary for {pool.service_name!r} ({'; '.join(reasons)})"


@dataclass
class Target:
    """The Redis being watched: a client, and how to find the nodes to scan this pass."""

    settings: RedisSettings
    client: Any  # redis.Redis (standalone or Sentinel-managed), or RedisCluster

    def nodes(self) -> list[Node]:
        """The primaries to scan now, named host:port (or by the URL for one server)."""
        if isinstance(self.client, RedisCluster):
            # CLUSTER SLOTS from the seed, else from any node seen so far: the seed may be the
            # node that died, and a seed that is a DNS name outlives nodes that moved.
            known = [(node.host, node.port) for node in self.client.get_nodes()]  # type: ignore[no-untyped-call]
            self.client.nodes_manager.initialize(
                additional_startup_nodes_info=known, disconnect_startup_nodes_pools=False
            )
            return [
                (node.name, self.client.get_redis_connection(node))
                for node in self.client.get_primaries()  # type: ignore[no-untyped-call]
            ]
        pool = self.client.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            # Asking now (rather than only on reconnect) moves to a new primary at once.
            try:
                host, port = pool.get_master_address()  # type: ignore[no-untyped-call]
            except MasterNotFoundError:
                raise MasterNotFoundError(no_primary_reasons(pool)) from None
            return [(f"{host}:{port}", self.client)]
        return [(self.settings.target(), self.client)]

    @property
    def keeps_topology(self) -> bool:
        """A cluster client is kept after a failed pass: the nodes it has seen are the way
        back to the cluster when the --redis-url seed is the node that died."""
        return isinstance(self.client, RedisCluster)

    def close(self) -> None:
        """Close the sockets; a client that keeps its topology reconnects on next use."""
        self.client.close()


def connect(settings: RedisSettings) -> Target:
    """Build the client. Standalone and Sentinel connect lazily; a Cluster reads its
    topology from the seed here, so this raises while the seed is unreachable."""
    if settings.mode == "cluster":
        client: Any = RedisCluster.from_url(
            settings.url or "",
            dynamic_startup_nodes=False,  # keep the seed as given; nodes() adds the known ones
            redis_connect_func=_no_touch,
            **connection_options(settings),
        )
    elif settings.mode == "sentinel":
        for_sentinels, for_primary = sentinel_options(settings)
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(settings.sentinels), sentinel_kwargs=for_sentinels, **for_primary
        )
        client = sentinel.master_for(  # type: ignore[no-untyped-call]
            settings.sentinel_master, redis_connect_func=_connect_no_touch
        )
    else:
        client = redis.Redis.from_url(
            settings.url or "", redis_connect_func=_connect_no_touch, **connection_options(settings)
        )
    return Target(settings, client)


def describe_tls_error(exc: BaseException) -> str | None:
    """A TLS handshake refused, in words that say what to fix; None for any other error."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or "certificate verify failed"
            return (
                f"TLS: the server's certificate does not verify ({reason}); "
                "check --redis-ca-file, or skip verification with --redis-tls-insecure"
            )
        # With TLS 1.3 the server checks the client's certificate after the handshake: its
        # refusal arrives as an alert, or (when the client writes first) as a bare EOF.
        if isinstance(cause, ssl.SSLEOFError) or (
            isinstance(cause, ssl.SSLError) and "ALERT" in (cause.reason or "")
        ):
            return (
                f"TLS: the server ended the session ({cause.reason or cause}); it may require "
                "a client certificate it trusts: check --redis-cert-file and --redis-key-file"
            )
        cause = cause.__cause__ or cause.__context__
    return None
