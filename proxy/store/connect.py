"""Building Redis clients from a URL: one server, Redis Sentinel, Redis Cluster, or embedded.

* ``redis://`` / ``rediss://`` / ``unix://``: one server.
* ``redis+sentinel://[:password@]h1:26379,h2:26379/<service>[/db]``: the master of ``service``
  as the sentinels name it; redis-py asks the sentinels again whenever a connection to the
  old master fails, so the proxy follows failovers without a restart.
* ``redis+cluster://[[user]:password@]h1:7000[,h2:7001...][/0]`` (``rediss+cluster://`` for
  TLS): a Redis Cluster, discovered from any of the listed nodes. Database 0 only (a cluster has
  no other). The store and the snapshot subscriber switch to their cluster paths.
* ``memory://``: an in-process Redis (fakeredis) for one replica (the demo).

A cluster client's connections turn uvloop's ``RuntimeError`` for a write to a transport the
peer closed (a killed master) into the ``ConnectionError`` redis-py handles: it refreshes the
slot map and retries, so the proxy follows a failover to the promoted replica.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


class RedisUrlError(ValueError):
    """The Redis URL cannot be used; the text never contains the password."""


def is_embedded(url: str) -> bool:
    """True for the in-process Redis (single replica only)."""
    return url == "memory://"


@dataclass(frozen=True)
class SentinelTarget:
    """Where the sentinels are and which master (and database) to use."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    password: str | None


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Split ``redis+sentinel://[:pw@]h1:p1,h2:p2/service[/db]``; ``RedisUrlError`` if malformed."""
    rest = url[len(SENTINEL_SCHEME) + 3 :]
    netloc, _, path = rest.partition("/")
    password: str | None = None
    if "@" in netloc:
        auth, _, netloc = netloc.rpartition("@")
        password = unquote(auth.partition(":")[2] or auth) or None
    sentinels: list[tuple[str, int]] = []
    for part in netloc.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep:
            host, port = port, "26379"
        if not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
            raise RedisUrlError(f"sentinel address {part.strip()!r} is not host:port")
        sentinels.append((host.strip("[]"), int(port)))
    pieces = [p for p in path.split("/") if p]
    if not pieces or len(pieces) > 2:
        raise RedisUrlError("a sentinel URL names the service: redis+sentinel://h:26379/mymaster")
    db = pieces[1] if len(pieces) == 2 else "0"
    if not db.isascii() or not db.isdigit():
        raise RedisUrlError(f"database {db!r} is not a number")
    return SentinelTarget(tuple(sentinels), unquote(pieces[0]), int(db), password)


def is_cluster(url: str) -> bool:
    """True for ``redis+cluster://`` and ``rediss+cluster://``."""
    return url.startswith(tuple(scheme + "://" for scheme in CLUSTER_SCHEMES))


@dataclass(frozen=True)
class ClusterTarget:
    """Where to discover the cluster from, and how to log in."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    tls: bool


def parse_cluster_url(url: str) -> ClusterTarget:
    """Split ``redis+cluster://[[user]:pw@]h1:p1,h2:p2[/0]``; ``RedisUrlError`` if malformed."""
    scheme, _, rest = url.partition("://")
    netloc, _, path = rest.partition("/")
    username: str | None = None
    password: str | None = None
    if "@" in netloc:
        auth, _, netloc = netloc.rpartition("@")
        user, sep, secret = auth.partition(":")
        if sep:
            username, password = unquote(user) or None, unquote(secret) or None
        else:
            password = unquote(user) or None  # redis://pw@host is a password too
    nodes: list[tuple[str, int]] = []
    for part in netloc.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep:
            host, port = port, "6379"
        if not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
            raise RedisUrlError(f"cluster node {part.strip()!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    db = path.strip("/")
    if db not in ("", "0"):
        raise RedisUrlError(f"a Redis Cluster has only database 0, not {db!r}")
    return ClusterTarget(tuple(nodes), username, password, scheme == "rediss+cluster")


def cluster_url_problem(url: str) -> str | None:
    """What is wrong with a cluster URL (password-free), or None: for settings validation."""
    try:
        parse_cluster_url(url)
    except RedisUrlError as exc:
        return f"{exc}; expected something like redis+cluster://h1:7000,h2:7001"
    return None


def check_redis_url(url: str) -> None:
    """Raise ``RedisUrlError`` (password-free text) when ``url`` cannot be connected to."""
    if is_embedded(url):
        return
    if url.startswith(SENTINEL_SCHEME + "://"):
        parse_sentinel_url(url)
        return
    if is_cluster(url):
        parse_cluster_url(url)
        return
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise RedisUrlError(
            "must start with redis://, rediss://, unix://, redis+sentinel://, redis+cluster://"
        )
    if parts.scheme != "unix":
        try:
            parts.port  # noqa: B018 (parsing is the check)
        except ValueError:
            raise RedisUrlError("the port is not a number between 1 and 65535") from None
        if not parts.hostname:
            raise RedisUrlError("names no host")


def redis_address(url: str) -> str:
    """Where Redis is, for logs and /readyz: never the user or password."""
    if is_embedded(url):
        return "embedded"
    if url.startswith(SENTINEL_SCHEME + "://"):
        try:
            target = parse_sentinel_url(url)
        except RedisUrlError:
            return "sentinel (malformed URL)"
        hosts = ",".join(f"{h}:{p}" for h, p in target.sentinels)
        return f"sentinel {hosts} master {target.service!r} db {target.db}"
    if is_cluster(url):
        try:
            cluster = parse_cluster_url(url)
        except RedisUrlError:
            return "cluster (malformed URL)"
        hosts = ",".join(f"{h}:{p}" for h, p in cluster.nodes)
        return f"cluster {hosts}" + (" (tls)" if cluster.tls else "")
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path or "unix socket"
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    db = parts.path.strip("/") or "0"
    return f"{parts.hostname or '127.0.0.1'}:{port}/{db}"


def make_clients(url: str, *, timeout_s: float) -> tuple[Redis, Redis]:
    """(commands client, pub/sub client) for ``url``.

    The pub/sub client has no read timeout (it blocks waiting for messages by design); every
    command on the other one times out after ``timeout_s``.

    On a cluster both are ``RedisCluster`` clients (typed ``Redis`` here so that callers keep
    one type; ``RedisStore`` and ``SnapshotSubscriber`` check for ``RedisCluster`` and take their
    cluster paths). The pub/sub one only maps slots to nodes: the subscriber opens one
    SSUBSCRIBE connection (no read timeout) per master node from it.
    """
    if is_embedded(url):
        import fakeredis

        server = fakeredis.FakeServer()
        return (
            fakeredis.FakeAsyncRedis(server=server),
            fakeredis.FakeAsyncRedis(server=server),
        )
    check_redis_url(url)
    if url.startswith(SENTINEL_SCHEME + "://"):
        return _sentinel_clients(parse_sentinel_url(url), timeout_s)
    if is_cluster(url):
        return _cluster_clients(parse_cluster_url(url), timeout_s)
    commands = Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=30,
        max_connections=256,
    )
    pubsub = Redis.from_url(url, socket_connect_timeout=timeout_s, health_check_interval=30)
    return commands, pubsub


def _sentinel_clients(target: SentinelTarget, timeout_s: float) -> tuple[Redis, Redis]:
    sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
        list(target.sentinels),
        sentinel_kwargs={"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s},
    )
    commands = sentinel.master_for(
        target.service,
        db=target.db,
        password=target.password,
        health_check_interval=30,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        max_connections=256,
    )
    pubsub = sentinel.master_for(
        target.service,
        db=target.db,
        password=target.password,
        health_check_interval=30,
        socket_connect_timeout=timeout_s,
    )
    return commands, pubsub


def _transport_closed(exc: RuntimeError) -> bool:
    # uvloop: "unable to perform operation on <TCPTransport closed=True ...>; the handler is
    # closed". The default event loop raises nothing there; redis-py only maps OSError.
    return "closed" in str(exc)


class ClusterConnection(Connection):
    """A cluster node connection whose writes to a closed transport fail as ConnectionError.

    A cluster node's pooled connection is written to without a health check first, so after
    its server died the write is the first thing to fail. As a ``RuntimeError`` it would skip
    redis-py's ConnectionError handling (refresh the slot map, retry) and reach the request as
    a 500; as a ``ConnectionError`` the command is retried on the promoted replica, or the
    store reports Redis unavailable (503).
    """

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        try:
            await super().send_packed_command(command, check_health)
        except RuntimeError as exc:  # super() has disconnected already
            if not _transport_closed(exc):
                raise
            raise RedisConnectionError(
                f"Error writing to {self.host}:{self.port}: the connection is closed"
            ) from exc


class ClusterSSLConnection(SSLConnection):
    """``ClusterConnection`` for ``rediss+cluster://``."""

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        try:
            await super().send_packed_command(command, check_health)
        except RuntimeError as exc:
            if not _transport_closed(exc):
                raise
            raise RedisConnectionError(
                f"Error writing to {self.host}:{self.port}: the connection is closed"
            ) from exc


def make_cluster_client(
    target: ClusterTarget, *, socket_timeout_s: float | None, connect_timeout_s: float
) -> RedisCluster:
    """A ``RedisCluster`` discovering the topology from ``target.nodes``, whose connections are
    ``ClusterConnection`` (``ClusterSSLConnection`` with TLS)."""
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        username=target.username,
        password=target.password,
        ssl=target.tls,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=connect_timeout_s,
        health_check_interval=30,
        max_connections=256,
    )
    connection_class = ClusterSSLConnection if target.tls else ClusterConnection
    # RedisCluster takes no connection class: set it where nodes get theirs, for the nodes it
    # discovers later (the same dict its NodesManager builds nodes from) and the startup nodes.
    client.connection_kwargs["connection_class"] = connection_class
    client.nodes_manager.connection_kwargs["connection_class"] = connection_class
    for node in client.nodes_manager.startup_nodes.values():
        node.connection_class = connection_class
    return client


def _cluster_clients(target: ClusterTarget, timeout_s: float) -> tuple[Redis, Redis]:
    commands = make_cluster_client(target, socket_timeout_s=timeout_s, connect_timeout_s=timeout_s)
    # Only asks for the slot map (bounded like any command); the subscriber's SSUBSCRIBE
    # connections, one per master, are its own and have no read timeout.
    pubsub = make_cluster_client(target, socket_timeout_s=timeout_s, connect_timeout_s=timeout_s)
    # Typed as Redis for callers that hold the pair (see make_clients).
    return cast(Redis, commands), cast(Redis, pubsub)


# The (commands client, pub/sub client) pair ``make_clients`` returns (and tests pass in).
RedisClients = tuple[Redis, Redis]


async def answers_ping(url: str, *, timeout_s: float = 0.5) -> bool:
    """True when a Redis at ``url`` (one server) answers PING within ``timeout_s``."""
    client: Redis = Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()
