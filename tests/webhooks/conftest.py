"""Fixtures for the webhook suite: replicas of a tiny app sharing one fake Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import fakeredis
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from proxy.clock import ManualClock
from proxy.web import keys
from tests.edge_client import edge_client
from tests.webhooks.helpers import SECRET, FakeWatching, Replica, ReplicaFactory, build_app


@pytest.fixture
def redis_server() -> fakeredis.FakeServer:
    """One fake Redis server that every replica in the test shares."""
    return fakeredis.FakeServer()


@pytest.fixture
def clock() -> ManualClock:
    """The wall clock signatures are checked against."""
    return ManualClock()


@pytest.fixture
async def make_replica(
    redis_server: fakeredis.FakeServer, clock: ManualClock
) -> AsyncIterator[ReplicaFactory]:
    """A factory of replicas on the shared fake Redis; all are closed after the test."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def factory(secret: str = SECRET) -> Replica:
        watching = FakeWatching()
        app = build_app(redis_server, clock, watching, secret)
        client = await edge_client(app, app[keys.SETTINGS])
        clients.append(client)
        return Replica(client, watching, clock)

    yield factory
    for client in clients:
        await client.close()


@pytest.fixture
async def replica(make_replica: ReplicaFactory) -> Replica:
    """One replica with the default secret."""
    return await make_replica()
