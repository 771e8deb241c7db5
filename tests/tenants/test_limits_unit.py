"""TenantLimits against fakeredis: batching, cluster-wide counts, release on every exit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import fakeredis
import pytest

from proxy.clock import ManualClock
from proxy.errors import TooManyRequests
from proxy.redaction import Secret
from proxy.resources import PROGRESS, ResourceRef
from proxy.settings import Settings
from proxy.store import keys
from proxy.store.errors import StoreError
from proxy.store.redis_store import RedisStore
from proxy.tenancy.access import Caller
from proxy.tenancy.config import TenantConfig
from proxy.tenancy.limits import TenantLimits
from proxy.tenancy.tokens import Grant

pytestmark = pytest.mark.timeout(10)


def tenant(**limits: Any) -> TenantConfig:
    """The acme tenant with the given limits."""
    return TenantConfig(id="acme", secrets=(("0", b"x" * 32),), **limits)


def caller_of(t: TenantConfig) -> Caller:
    """A caller holding a grant of ``t``."""
    return Caller(Grant(tenant=t, containers=frozenset(), jobs=frozenset(), expires_at=0.0))


def ref(n: int) -> ResourceRef:
    """A distinct container."""
    return ResourceRef(PROGRESS, f"cnt_{uuid.UUID(int=n)}")


class CountingLimits(TenantLimits):
    """Records every permit request that reaches Redis."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.takes: list[tuple[int, int]] = []  # (wanted, granted)

    async def _take(self, tenant: TenantConfig, permits: Any, want: int) -> tuple[int, int]:
        granted, retry_ms = await super()._take(tenant, permits, want)
        self.takes.append((want, granted))
        return granted, retry_ms


@pytest.fixture
async def server() -> AsyncIterator[fakeredis.FakeServer]:
    """One fake Redis server that every 'replica' in a test shares."""
    yield fakeredis.FakeServer()


Factory = Callable[..., CountingLimits]


@pytest.fixture
async def make(server: fakeredis.FakeServer) -> AsyncIterator[Factory]:
    """Build limiters (one per simulated replica) on the shared server and a manual clock."""
    built: list[tuple[CountingLimits, Any]] = []

    def build(
        t: TenantConfig, *, clock: ManualClock | None = None, **settings: Any
    ) -> CountingLimits:
        redis = fakeredis.FakeAsyncRedis(server=server)
        store = RedisStore(
            redis, owner="r", lease_ttl_ms=6000, linger_ms=15000, snapshot_ttl_ms=60_000
        )
        s = Settings(
            layers_api_key=Secret("k"),
            tenants=(t,),
            replica_id=f"replica{len(built)}",
            **settings,
        )
        limits = CountingLimits(store=store, settings=s, clock=clock or ManualClock())
        built.append((limits, redis))
        return limits

    yield build
    for limits, redis in built:
        await limits.aclose()
        await redis.aclose()


async def test_open_mode_checks_nothing(make: Factory, server: fakeredis.FakeServer) -> None:
    """Without a tenant every limit is a no-op and Redis is never touched."""
    limits = make(tenant(requests_per_second=1, max_streams=1, max_watched=1))
    anonymous = Caller()
    for n in range(5):
        await limits.admit(anonymous)
        limits.watch(anonymous, ref(n))
    async with limits.stream(anonymous), limits.stream(anonymous):
        pass
    assert limits.takes == []
    assert await fakeredis.FakeAsyncRedis(server=server).keys("*") == []


async def test_concurrent_admits_share_one_refill(make: Factory) -> None:
    """Ten requests arriving together on an empty batch cost one Redis call for ten permits."""
    limits = make(tenant(requests_per_second=100))  # batch = 10
    caller = caller_of(limits._tenants["acme"])
    await asyncio.gather(*(limits.admit(caller) for _ in range(10)))
    assert limits.takes == [(10, 10)]


async def test_batch_spent_locally(make: Factory) -> None:
    """A busy replica takes whole batches and spends them without Redis."""
    limits = make(tenant(requests_per_second=100))  # batch = 10
    caller = caller_of(limits._tenants["acme"])
    for _ in range(10):
        await asyncio.gather(*(limits.admit(caller) for _ in range(5)))
    granted = sum(g for _, g in limits.takes)
    assert 50 <= granted <= 50 + 10  # at most one batch left unspent
    assert len(limits.takes) <= 7  # 50 requests, batches of up to 10


async def test_a_quiet_replica_takes_one_permit_at_a_time(make: Factory) -> None:
    """With no recent traffic a replica asks for one permit, so it hoards nothing."""
    clock = ManualClock()
    limits = make(tenant(requests_per_second=100), clock=clock)
    caller = caller_of(limits._tenants["acme"])
    for _ in range(3):
        await limits.admit(caller)
        clock.advance(10.0)
    assert limits.takes == [(1, 1), (1, 1), (1, 1)]


async def test_over_rate_is_429_naming_the_limit(make: Factory) -> None:
    """The sixth request in a second at 5/s gets 429 with the limit named and Retry-After."""
    limits = make(tenant(requests_per_second=5))  # batch = 1
    caller = caller_of(limits._tenants["acme"])
    for _ in range(5):
        await limits.admit(caller)
    with pytest.raises(TooManyRequests) as raised:
        await limits.admit(caller)
    err = raised.value
    assert err.status == 429 and err.code == "RATE_LIMITED"
    assert "tenant acme is over its requests_per_second limit (5)" in err.message
    assert err.headers["Retry-After"] == "1"
    assert err.details == {"limit": "requests_per_second", "value": 5}
    calls = len(limits.takes)
    with pytest.raises(TooManyRequests):
        await limits.admit(caller)
    assert len(limits.takes) == calls  # the denial is remembered locally until Retry-After


async def test_two_replicas_share_one_rate(make: Factory) -> None:
    """Two replicas hammering one tenant admit at most its rate per second between them."""
    t = tenant(requests_per_second=20)  # batch = 2
    replicas = [make(t), make(t)]
    caller = caller_of(t)
    admitted = 0

    async def hammer(limits: TenantLimits) -> None:
        nonlocal admitted
        for _ in range(50):
            try:
                await limits.admit(caller)
                admitted += 1
            except TooManyRequests:
                pass

    await asyncio.gather(*(hammer(r) for r in replicas))
    granted = sum(g for r in replicas for _, g in r.takes)
    # All of it happens well within one second: Redis grants exactly the rate, and what the
    # replicas still hold unspent (at most one batch each) is all that is not admitted.
    assert granted == 20
    assert 20 - 2 * 2 <= admitted <= 20


async def test_redis_down_falls_back_to_local_limits(
    make: Factory, server: fakeredis.FakeServer
) -> None:
    """When Redis cannot be reached each replica enforces the tenant's rate on its own."""
    clock = ManualClock()
    limits = make(tenant(requests_per_second=2), clock=clock)
    caller = caller_of(limits._tenants["acme"])
    server.connected = False
    admitted = refused = 0
    for _ in range(10):
        try:
            await limits.admit(caller)
            admitted += 1
        except TooManyRequests as exc:
            refused += 1
            assert exc.headers["Retry-After"] == "1"
    assert (admitted, refused) == (2, 8)
    clock.advance(1.0)
    await limits.admit(caller)  # the local bucket refills at the tenant's rate


async def test_a_paused_redis_never_delays_admission(make: Factory) -> None:
    """A refill that Redis does not answer is waited for once, 200 ms at most."""
    limits = make(tenant(requests_per_second=1000))
    caller = caller_of(limits._tenants["acme"])
    stalled = asyncio.Event()

    async def never(*args: Any, **kwargs: Any) -> Any:
        stalled.set()
        await asyncio.Event().wait()

    limits._store.take_permits = never  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(5):
        for _ in range(50):
            await limits.admit(caller)
    assert stalled.is_set()
    assert loop.time() - started < 1.0  # 50 requests: one 200 ms wait, then local decisions


async def test_watch_refuses_a_new_resource_over_the_limit(make: Factory) -> None:
    """The third distinct resource at max_watched=2 is 429; the two watched ones keep working."""
    limits = make(tenant(max_watched=2))
    caller = caller_of(limits._tenants["acme"])
    limits.watch(caller, ref(1))
    limits.watch(caller, ref(2))
    with pytest.raises(TooManyRequests) as raised:
        limits.watch(caller, ref(3))
    assert "tenant acme is over its max_watched limit (2)" in raised.value.message
    assert raised.value.details == {"limit": "max_watched", "value": 2}
    limits.watch(caller, ref(1))
    limits.watch(caller, ref(2))


async def test_watch_limit_is_cluster_wide(make: Factory) -> None:
    """Resources watched on one replica count on another after a sync; shared ones stay free."""
    t = tenant(max_watched=2)
    one, two = make(t), make(t)
    caller = caller_of(t)
    one.watch(caller, ref(1))
    one.watch(caller, ref(2))
    await one.sync()
    two.watch(caller, ref(1))
    await two.sync()  # now it knows the cluster holds 1 and 2
    two.watch(caller, ref(2))  # already watched in the cluster: not new
    with pytest.raises(TooManyRequests):
        two.watch(caller, ref(3))


async def test_watched_resources_lapse_after_the_linger(make: Factory) -> None:
    """Once the linger passes with no request, the slots free up cluster-wide."""
    clock = ManualClock()
    limits = make(tenant(max_watched=1), clock=clock, linger_s=0.2)
    caller = caller_of(limits._tenants["acme"])
    limits.watch(caller, ref(1))
    await limits.sync()
    with pytest.raises(TooManyRequests):
        limits.watch(caller, ref(2))
    clock.advance(0.3)
    # The Redis side expires on the Redis clock, which only real time moves.
    await asyncio.sleep(0.25)
    await limits.sync()
    limits.watch(caller, ref(2))


async def test_streams_count_across_replicas(make: Factory) -> None:
    """max_streams=2 holds across two replicas; closing one stream frees its slot."""
    t = tenant(max_streams=2)
    one, two = make(t), make(t)
    caller = caller_of(t)
    async with one.stream(caller), two.stream(caller):
        with pytest.raises(TooManyRequests) as raised:
            async with one.stream(caller):
                pass
        assert "tenant acme is over its max_streams limit (2)" in raised.value.message
        assert raised.value.details == {"limit": "max_streams", "value": 2}
    async with one.stream(caller), one.stream(caller):
        pass


async def test_stream_slot_released_on_cancellation(
    make: Factory, server: fakeredis.FakeServer
) -> None:
    """A stream task cancelled mid-stream gives its slot back."""
    limits = make(tenant(max_streams=1))
    caller = caller_of(limits._tenants["acme"])
    entered = asyncio.Event()

    async def streaming() -> None:
        async with limits.stream(caller):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(streaming())
    await entered.wait()
    redis = fakeredis.FakeAsyncRedis(server=server)
    assert await redis.zcard(keys.tenant_streams("acme")) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await redis.zcard(keys.tenant_streams("acme")) == 0
    async with limits.stream(caller):
        pass


async def test_refreshed_slots_live_and_abandoned_ones_lapse(make: Factory) -> None:
    """A holder that keeps syncing keeps its slot past the TTL; one that stops loses it."""
    t = tenant(max_streams=1)
    clock = ManualClock()
    holder = make(t, clock=clock, lease_ttl_s=0.3)
    other = make(t, lease_ttl_s=0.3)
    caller = caller_of(t)
    async with holder.stream(caller):
        for _ in range(5):  # 0.5 s of real time, past the 0.3 s slot TTL
            await asyncio.sleep(0.1)
            clock.advance(0.1)
            await holder.sync()
        with pytest.raises(TooManyRequests):
            async with other.stream(caller):
                pass
        # The holder "crashes": nobody refreshes; the slot lapses on the Redis clock.
        await asyncio.sleep(0.4)
        async with other.stream(caller):
            pass


async def test_stream_pins_its_resources_while_open(make: Factory) -> None:
    """A stream's resources stay watched while it is open, then linger like any other."""
    clock = ManualClock()
    limits = make(tenant(max_watched=1), clock=clock, linger_s=1.0)
    caller = caller_of(limits._tenants["acme"])
    limits.watch(caller, ref(1))
    async with limits.stream(caller, [ref(1)]):
        clock.advance(5.0)
        await limits.sync()
        with pytest.raises(TooManyRequests):
            limits.watch(caller, ref(2))
    clock.advance(0.5)
    await limits.sync()
    assert ref(1).key in limits._watched["acme"].expires  # lingering
    clock.advance(1.0)
    await limits.sync()
    assert ref(1).key not in limits._watched["acme"].expires


async def test_a_failed_sync_sends_its_keys_again(
    make: Factory, server: fakeredis.FakeServer
) -> None:
    """Keys a failed sync carried are sent with the next one, once Redis answers again."""
    limits = make(tenant(max_watched=5))
    caller = caller_of(limits._tenants["acme"])
    limits.watch(caller, ref(1))
    server.connected = False
    with pytest.raises(StoreError):
        await limits.sync()
    server.connected = True
    assert await limits._store.ping()  # the probe notices Redis is back
    await limits.sync()
    redis = fakeredis.FakeAsyncRedis(server=server)
    assert await redis.zrange(keys.tenant_watched("acme"), 0, -1) == [ref(1).key.encode()]
    assert limits._watched["acme"].cluster_count == 1
    assert not limits._watched["acme"].unsynced
