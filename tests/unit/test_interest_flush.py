"""The interest flush writes who watches what in one round trip: interest and free leases, the
census, the tenants' watched sets and stream slots (a real redis-server, and fakeredis for the
outage, which it can switch off)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import fakeredis
import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from proxy.errors import TooManyRequests
from proxy.store import keys
from proxy.store.errors import StoreError
from proxy.testing.processes import ManagedProcess
from tests.flush_helpers import ACME, GLOBEX, Replica, RoundTrips, caller_of, make_replica, ref

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
async def real_redis(redis_proc: ManagedProcess) -> AsyncIterator[Redis]:
    """A clean database on the session's redis-server."""
    client = Redis(port=redis_proc.port, db=2)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


async def _slot_expiry(redis: Redis, tenant: str) -> float:
    [(_, score)] = await redis.zrange(keys.tenant_streams(tenant), 0, -1, withscores=True)
    return float(score)


async def test_one_round_trip_per_flush_with_two_tenants_and_an_open_stream(
    real_redis: Redis, redis_proc: ManagedProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each flush is one pipeline on the wire: touches, census, watched sets and stream slot."""
    replica = make_replica(real_redis)
    trips = RoundTrips(monkeypatch, replica.store)
    held, acme_polled, globex_polled = ref(1), ref(2), ref(3)
    async with replica.limits.stream(caller_of(ACME), [held]):
        replica.limits.watch(caller_of(ACME), held)
        replica.interest.hold(held, ACME.id)
        replica.watch(ACME, acme_polled)
        replica.watch(GLOBEX, globex_polled)
        await replica.interest.flush_once()  # loads the scripts (NOSCRIPT) and takes the leases
        for _ in range(3):
            replica.clock.advance(2.0)  # a third of the slot TTL: the stream slot is due
            replica.watch(ACME, acme_polled)
            replica.watch(GLOBEX, globex_polled)
            slot_before = await _slot_expiry(real_redis, ACME.id)
            await real_redis.config_resetstat()
            await asyncio.sleep(0.01)  # the Redis clock moves on, so the slot's expiry does too
            trips.reset()
            await replica.interest.flush_once()
            assert trips.calls == 1
            assert trips.wire == {redis_proc.port: 1}
            stats = await real_redis.info("commandstats")
            # 3 touches + 1 census merge + 2 watched sets + 1 stream slot refresh.
            assert stats["cmdstat_evalsha"]["calls"] == 7
            assert await _slot_expiry(real_redis, ACME.id) > slot_before

    names = [r.key for r in (held, acme_polled, globex_polled)]
    assert all([await real_redis.exists(keys.watch(k)) for k in names])
    assert all(replica.interest._leases.owns(k) for k in names)
    census = await real_redis.hkeys(keys.WATCHED)
    assert {c.decode() for c in census} == {
        f"acme|{names[0]}",
        f"acme|{names[1]}",
        f"globex|{names[2]}",
    }
    allocation = await replica.census.refresh()
    assert set(allocation.tenants_of[names[2]]) == {"globex"}
    acme_set = await real_redis.zrange(keys.tenant_watched(ACME.id), 0, -1)
    assert {m.decode() for m in acme_set} == set(names[:2])
    assert await real_redis.zrange(keys.tenant_watched(GLOBEX.id), 0, -1) == [names[2].encode()]
    assert replica.limits._watched[ACME.id].cluster_count == 2


async def test_stream_slots_are_refreshed_when_nothing_is_watched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With an empty interest batch the flush still keeps open streams' slots alive; with
    nothing at all to write it makes no round trip."""
    redis = fakeredis.FakeAsyncRedis()
    replica = make_replica(redis)
    trips = RoundTrips(monkeypatch, replica.store)
    await replica.interest.flush_once()
    assert trips.calls == 0
    async with replica.limits.stream(caller_of(GLOBEX)):
        first = await _slot_expiry(redis, GLOBEX.id)
        await asyncio.sleep(0.01)
        trips.reset()
        await replica.interest.flush_once()  # due at once: never refreshed yet
        assert trips.calls == 1
        refreshed = await _slot_expiry(redis, GLOBEX.id)
        assert refreshed > first
        await replica.interest.flush_once()  # not due again until a third of the TTL passed
        assert trips.calls == 1
        replica.clock.advance(2.0)
        await asyncio.sleep(0.01)
        await replica.interest.flush_once()
        assert trips.calls == 2
        assert await _slot_expiry(redis, GLOBEX.id) > refreshed
    await redis.aclose()


async def test_a_failed_flush_keeps_its_entries_and_the_limits_go_local_once() -> None:
    """Redis down: every flush fails, the limits say once that they are local; when Redis is
    back the next flush writes the interest, census, watched sets and slot it had kept."""
    server = fakeredis.FakeServer()
    redis = fakeredis.FakeAsyncRedis(server=server)
    replica = make_replica(redis)
    acme_polled, globex_polled = ref(2), ref(3)
    async with replica.limits.stream(caller_of(ACME)):
        slot_before = await _slot_expiry(redis, ACME.id)
        replica.watch(ACME, acme_polled)
        replica.watch(GLOBEX, globex_polled)
        server.connected = False
        with capture_logs() as logs:
            for _ in range(3):
                with pytest.raises(StoreError):
                    await replica.interest.flush_once()
            server.connected = True
            assert await replica.store.ping()  # the probe notices Redis is back
            await asyncio.sleep(0.01)
            await replica.interest.flush_once()
        events = [entry["event"] for entry in logs if entry["event"].startswith("tenant_limits")]
        assert events == ["tenant_limits_local", "tenant_limits_cluster"]
        assert await _slot_expiry(redis, ACME.id) > slot_before

    for tenant, resource in ((ACME, acme_polled), (GLOBEX, globex_polled)):
        assert await redis.exists(keys.watch(resource.key))
        assert await redis.hexists(keys.WATCHED, f"{tenant.id}|{resource.key}")
        members = await redis.zrange(keys.tenant_watched(tenant.id), 0, -1)
        assert members == [resource.key.encode()]
    await redis.aclose()


async def test_replicas_count_each_others_watched_resources_through_the_flush() -> None:
    """max_watched stays cluster-wide with the limits synced by the flush alone."""
    server = fakeredis.FakeServer()
    one, two = (
        make_replica(fakeredis.FakeAsyncRedis(server=server), owner) for owner in ("one", "two")
    )
    tight = dataclasses.replace(ACME, max_watched=2)
    for replica in (one, two):
        replica.limits._tenants[ACME.id] = tight
    one.watch(tight, ref(1))
    one.watch(tight, ref(2))
    await one.interest.flush_once()
    two.watch(tight, ref(1))
    await two.interest.flush_once()  # now it knows the cluster holds 1 and 2
    two.watch(tight, ref(2))  # watched in the cluster already: not new
    with pytest.raises(TooManyRequests, match="max_watched"):
        two.watch(tight, ref(3))
    await _close(one, two)


async def _close(*replicas: Replica) -> None:
    for replica in replicas:
        await replica.limits.aclose()
        await replica.store.redis.aclose()


@pytest.fixture(params=["fakeredis", "redis-server"])
async def any_redis(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    """fakeredis, then the session's redis-server."""
    if request.param == "fakeredis":
        client: Redis = fakeredis.FakeAsyncRedis()
    else:
        proc: ManagedProcess = request.getfixturevalue("redis_proc")
        client = Redis(port=proc.port, db=2)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


async def test_a_large_census_is_written_in_one_script(any_redis: Redis) -> None:
    """10,000 census values (past Lua's unpack limit) still go in one call of the merge."""
    replica = make_replica(any_redis)
    census = {f"acme|{ref(n).key}": f"{n}|2000" for n in range(5000)}
    flushed = await replica.store.flush_interest((), census)
    assert flushed.touched == [] and flushed.watched == []
    stored = await any_redis.hgetall(keys.WATCHED)
    assert {k.decode(): v.decode() for k, v in stored.items()} == census
