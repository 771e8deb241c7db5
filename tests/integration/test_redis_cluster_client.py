"""The proxy's cluster client itself (``proxy.store.connect``) across a master failover.

A real 3-master cluster with one replica per master (node timeout 1 s). The client runs on
uvloop, as the proxy does: there a write to the pooled connection of a killed master raises
``RuntimeError`` (the transport is closed), which redis-py does not treat as a connection
error. ``ClusterConnection`` turns it into one, so every failure while the master is down is a
``RedisError`` (the store maps those to "Redis unavailable", a 503) and the client finds the
promoted replica by itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis
import uvloop
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection

from proxy.store import keys
from proxy.store.connect import ClusterConnection, make_clients
from tests.redis_topologies import Cluster, start_cluster

NODE_TIMEOUT_MS = 1000
FOLLOW_WITHIN_S = 10.0  # the replica is promoted about 2 s after the kill


@pytest.fixture
def failover_cluster() -> Iterator[Cluster]:
    topology = start_cluster(3, replicas=1, node_timeout_ms=NODE_TIMEOUT_MS)
    yield topology
    topology.stop()


def _key_on(cluster: Cluster, port: int) -> str:
    """A resource key whose slot the master on ``port`` serves."""
    for i in range(10_000):
        key = f"progress:-:cnt_{i:05d}"
        if cluster.master_port_of_slot(keys.key_slot(keys.channel(key))) == port:
            return keys.snapshot(key)
    raise AssertionError(f"no key on {port}")


WORKERS = 16  # the proxy's tasks share each node's pool; so do these


async def _follow(cluster: Cluster) -> dict[str, object]:
    commands, pubsub = make_clients(cluster.url, timeout_s=0.5)
    assert isinstance(commands, RedisCluster) and isinstance(pubsub, RedisCluster)
    try:
        await commands.initialize()
        classes = {node.connection_class for node in commands.get_nodes()}
        victim = cluster.masters()[0].port
        on_victim = _key_on(cluster, victim)
        others = [_key_on(cluster, n.port) for n in cluster.masters() if n.port != victim]
        # Several pooled connections to every master, as a busy proxy has.
        await asyncio.gather(*(commands.set(k, "before") for k in [on_victim, *others] * 8))
        failures: dict[str, int] = {}
        unexpected: list[str] = []
        written: list[float] = []
        killed_at = time.monotonic()

        async def writer(n: int) -> None:
            i = 0
            while time.monotonic() - killed_at < FOLLOW_WITHIN_S:
                i += 1
                try:
                    await commands.set(on_victim, f"w{n}-{i}")
                except redis.RedisError as exc:
                    failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                except Exception as exc:  # what would reach a request as a 500
                    unexpected.append(f"{type(exc).__name__}: {exc}")
                else:
                    if i > 1:  # the first write may land before the kill takes effect
                        written.append(time.monotonic())
                        return
                await asyncio.sleep(0.05)

        cluster.node(victim).kill()
        await asyncio.gather(*(writer(n) for n in range(WORKERS)))
        others_read = [await commands.get(k) for k in others]
        return {
            "classes": classes,
            "failures": failures,
            "unexpected": unexpected[:5],
            "unexpected_count": len(unexpected),
            "followed": len(written),
            "follow_s": max(written) - killed_at if written else None,
            "others": others_read,
        }
    finally:
        await commands.aclose()
        await pubsub.aclose()


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_the_cluster_client_follows_a_master_failover_on_uvloop(failover_cluster: Cluster) -> None:
    """SIGKILL a master while 16 tasks write to it through one client with pooled connections
    to it: until the replica is promoted every failure is a RedisError (never uvloop's
    RuntimeError), then every writer gets through to the promoted replica; the keys on the
    other masters stay readable."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        seen = runner.run(_follow(failover_cluster))
    assert seen["classes"] == {ClusterConnection}, seen
    assert seen["unexpected_count"] == 0, seen
    assert seen["failures"], seen  # the master was down for a while
    assert seen["followed"] == WORKERS, seen  # every writer got through to the promoted replica
    follow_s = seen["follow_s"]
    assert isinstance(follow_s, float) and follow_s < FOLLOW_WITHIN_S, seen
    assert seen["others"] == [b"before", b"before"], seen


def _write_to_closed_transport(connection_class: type[Connection]) -> BaseException | None:
    """What ``send_packed_command`` raises on uvloop once the connection's transport is closed
    (as a killed peer leaves it), or None."""

    async def run() -> BaseException | None:
        accepted: list[asyncio.StreamWriter] = []
        arrived = asyncio.Event()

        def on_client(_: asyncio.StreamReader, peer: asyncio.StreamWriter) -> None:
            accepted.append(peer)
            arrived.set()

        server = await asyncio.start_server(on_client, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(5):
            await arrived.wait()  # the server's end, closed at the end
        connection = connection_class(host="127.0.0.1", port=port, socket_timeout=0.5)
        connection._reader, connection._writer = reader, writer  # connected, by hand
        writer.transport.close()
        await asyncio.sleep(0)
        try:
            await connection.send_packed_command(b"PING\r\n", check_health=False)
        except BaseException as exc:
            return exc
        finally:
            for peer in accepted:
                peer.close()
            server.close()
            await server.wait_closed()
        return None

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run())


@pytest.mark.timeout(10)
def test_a_write_to_a_closed_transport_is_a_connection_error() -> None:
    """On uvloop redis-py's own connection raises RuntimeError there (a 500 in the proxy, found
    by the failover test); the cluster client's connection raises ConnectionError instead."""
    plain = _write_to_closed_transport(Connection)
    assert isinstance(plain, RuntimeError) and "closed" in str(plain), repr(plain)
    ours = _write_to_closed_transport(ClusterConnection)
    assert isinstance(ours, redis.ConnectionError), repr(ours)
    assert isinstance(ours.__cause__, RuntimeError)
