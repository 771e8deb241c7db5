"""The interest flush on a real 3-master Redis Cluster: still one store round trip (one pipeline
per master, sent together), every script single-slot, scripts a master lost loaded again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from proxy.store import keys
from proxy.store.connect import make_clients
from tests.flush_helpers import ACME, GLOBEX, Replica, RoundTrips, caller_of, make_replica, ref
from tests.redis_topologies import Cluster, start_cluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def topology() -> Iterator[Cluster]:
    cluster = start_cluster(3)
    yield cluster
    cluster.stop()


@pytest.fixture
async def replica(topology: Cluster) -> AsyncIterator[Replica]:
    """A replica's flush on the cluster, which is empty and has no scripts loaded."""
    topology.wait_ok()
    for node in topology.nodes:
        client = redis.Redis(port=node.port, socket_timeout=2)
        try:
            client.flushall()
            client.script_flush()
        finally:
            client.close()
    commands, pubsub = make_clients(topology.url, timeout_s=2.0)
    made = make_replica(commands)
    assert made.store.cluster
    yield made
    await made.limits.aclose()
    for client in (commands, pubsub):
        await client.aclose()


async def test_one_round_trip_per_flush_on_a_cluster(
    replica: Replica, topology: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resources on every master, two tenants and an open stream: one store call per flush,
    one pipeline per master, and everything written where it belongs."""
    resources = [ref(n) for n in range(1, 13)]
    client = topology.client()
    try:
        masters = {client.get_node_from_key(keys.lease(r.key)).port for r in resources}
    finally:
        client.close()
    assert len(masters) == 3
    trips = RoundTrips(monkeypatch, replica.store)
    async with replica.limits.stream(caller_of(ACME), resources[:1]):
        replica.interest.hold(resources[0], ACME.id)
        for n, resource in enumerate(resources):
            replica.watch(ACME if n % 2 else GLOBEX, resource)
        await replica.interest.flush_once()  # NOSCRIPT on every master: loaded, then run
        for _ in range(2):
            replica.clock.advance(2.0)  # the stream slot is due its refresh
            for n, resource in enumerate(resources):
                replica.watch(ACME if n % 2 else GLOBEX, resource)
            trips.reset()
            await replica.interest.flush_once()
            assert trips.calls == 1
            # One pipeline to each master (each holds some of the resources), sent together.
            assert trips.wire == dict.fromkeys(masters, 1), trips.wire

    assert all(replica.interest._leases.owns(r.key) for r in resources)
    client = topology.client()
    try:
        assert all(client.exists(keys.watch(r.key)) for r in resources)
        census = {field.decode() for field in client.hkeys(keys.WATCHED)}
        assert census == {
            f"{'acme' if n % 2 else 'globex'}|{r.key}" for n, r in enumerate(resources)
        } | {f"acme|{resources[0].key}"}
        assert client.zcard(keys.tenant_watched(ACME.id)) == 7  # six polled + the stream's
        assert client.zcard(keys.tenant_watched(GLOBEX.id)) == 6
    finally:
        client.close()
    assert replica.limits._watched[GLOBEX.id].cluster_count == 6
