"""One replica's interest flush as the app wires it (interest, census, tenant limits), on any
Redis client, and a counter of the round trips it makes: at the store boundary (``call``) and on
the wire (one ``send_packed_command`` per pipeline or command sent to a server)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from redis.asyncio.connection import AbstractConnection

from proxy.clock import ManualClock
from proxy.redaction import Secret
from proxy.resources import PROGRESS, ResourceRef
from proxy.services.cache import SnapshotCache
from proxy.services.census import Census
from proxy.services.interest import InterestTracker
from proxy.services.leases import Leases
from proxy.settings import Settings
from proxy.store.base import AnyRedis
from proxy.store.redis_store import RedisStore
from proxy.tenancy.access import Caller
from proxy.tenancy.config import TenantConfig
from proxy.tenancy.limits import TenantLimits
from proxy.tenancy.tokens import Grant

T = TypeVar("T")

ACME = TenantConfig(id="acme", secrets=(("0", b"a" * 32),), max_watched=10, max_streams=5)
GLOBEX = TenantConfig(id="globex", secrets=(("0", b"g" * 32),), max_watched=10, max_streams=5)


def ref(n: int) -> ResourceRef:
    """A distinct container."""
    return ResourceRef(PROGRESS, f"cnt_{uuid.UUID(int=n)}")


def caller_of(tenant: TenantConfig) -> Caller:
    """A caller holding a grant of ``tenant``."""
    return Caller(Grant(tenant=tenant, containers=frozenset(), jobs=frozenset(), expires_at=0.0))


@dataclass
class Replica:
    """The flush's parts of one replica, on a manual clock."""

    store: RedisStore
    clock: ManualClock
    interest: InterestTracker
    limits: TenantLimits
    census: Census
    settings: Settings

    def watch(self, tenant: TenantConfig, resource: ResourceRef) -> None:
        """What a poll of ``resource`` by ``tenant`` does to the flush's parts."""
        self.limits.watch(caller_of(tenant), resource)
        self.interest.note(resource, tenant.id)


def make_replica(redis: AnyRedis, owner: str = "r1", **settings: Any) -> Replica:
    """A replica's store, interest tracker, census and tenant limits, wired as the app does."""
    s = Settings(layers_api_key=Secret("k"), tenants=(ACME, GLOBEX), replica_id=owner, **settings)
    clock = ManualClock()
    store = RedisStore(
        redis,
        owner=owner,
        lease_ttl_ms=int(s.lease_ttl_s * 1000),
        linger_ms=int(s.linger_s * 1000),
        snapshot_ttl_ms=60_000,
    )
    census = Census(store=store, settings=s, clock=clock)
    limits = TenantLimits(store=store, settings=s, clock=clock)
    interest = InterestTracker(
        store=store,
        leases=Leases(store),
        cache=SnapshotCache(),
        settings=s,
        clock=clock,
        census=census,
        limits=limits,
    )
    return Replica(store, clock, interest, limits, census, s)


class RoundTrips:
    """Counts the store's round trips (``call``) and what went on the wire, per server port."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: RedisStore) -> None:
        self.calls = 0
        self.wire: Counter[int] = Counter()
        send = AbstractConnection.send_packed_command
        call = store.call

        async def counted_send(conn: AbstractConnection, command: Any, check_health: bool = True):  # type: ignore[no-untyped-def]
            self.wire[int(getattr(conn, "port", 0))] += 1
            return await send(conn, command, check_health)

        async def counted_call(op: Callable[[], Awaitable[T]], *, probe: bool = False) -> T:
            self.calls += 1
            return await call(op, probe=probe)

        monkeypatch.setattr(AbstractConnection, "send_packed_command", counted_send)
        monkeypatch.setattr(store, "call", counted_call)

    def reset(self) -> None:
        self.calls = 0
        self.wire.clear()
