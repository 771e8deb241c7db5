"""The scheduler, one pass at a time: fakeredis, a fake upstream transport, a manual clock."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import fakeredis
import orjson

from proxy.clock import ManualClock
from proxy.redaction import Secret
from proxy.resources import PROGRESS, ResourceRef
from proxy.services.cache import SnapshotCache
from proxy.services.leases import Lease
from proxy.services.scheduler import MAX_SPACING_S, Scheduler
from proxy.services.stats import Stats
from proxy.settings import Settings, load_settings
from proxy.store import keys
from proxy.store.redis_store import BudgetPolicy, RedisStore
from proxy.upstream.client import RawResponse, UpstreamClient

FAILING = Settings.upstream_failing_connections
HEALTHY = Settings.upstream_max_connections - FAILING
REF = ResourceRef(PROGRESS, "cnt_3f2b8c1e-9a4d-4e7b-8c21-0a1b2c3d4e5f")


class FakeTransport:
    """Answers every GET with the next scripted body and records the calls."""

    def __init__(self, bodies: list[dict[str, Any]]) -> None:
        self.bodies = bodies
        self.calls: list[str] = []

    async def get(self, url: str, headers: Mapping[str, str], timeout_s: float) -> RawResponse:
        self.calls.append(url)
        body = self.bodies[min(len(self.calls), len(self.bodies)) - 1]
        return RawResponse(200, {}, orjson.dumps(body))

    async def close(self) -> None:
        return None


class FixedCensus:
    """A census stand-in whose fair interval the test sets."""

    def __init__(self) -> None:
        self.fair: float | None = None

    def interval_for(self, key: str) -> float | None:
        return self.fair

    def payer(self, key: str, hint: str) -> str:
        return hint

    def tenant_budget(self, tenant: str) -> BudgetPolicy:
        return BudgetPolicy()

    def tenants_of(self, key: str) -> tuple[str, ...]:
        return ()

    def to_publish(self, demand: Mapping[tuple[str, str], float]) -> dict[str, str]:
        return {}


def body(stage: str, status: str = "processing") -> dict[str, Any]:
    return {
        "containerId": REF.id,
        "status": status,
        "stage": stage,
        "stageProgress": 0.1,
        "etaSeconds": None,
        "updatedAt": "2026-01-01T00:00:00Z",
    }


async def make(
    bodies: list[dict[str, Any]],
) -> tuple[Scheduler, FakeTransport, ManualClock, RedisStore]:
    settings = load_settings(
        env={"LAYERS_API_KEY": "k", "PROXY_AUTH": "none", "REDIS_URL": "memory://"}
    )
    clock = ManualClock()
    transport = FakeTransport(bodies)
    store = RedisStore(
        fakeredis.FakeAsyncRedis(),
        owner="r1",
        lease_ttl_ms=60_000,
        linger_ms=60_000,
        snapshot_ttl_ms=60_000,
    )
    upstream = UpstreamClient(
        base_url="http://layers.test",
        api_key=Secret("k"),
        transport=transport,
        timeout_s=5,
        wall_clock=clock.wall,
    )
    scheduler = Scheduler(
        store=store,
        upstream=upstream,
        cache=SnapshotCache(),
        settings=settings,
        clock=clock,
        stats=Stats(),
    )
    # This Redis has remembered for long: no floor wait for a forgotten previous holder.
    await store.redis.set(keys.MEMORY_SINCE, 0)
    [touched] = await store.touch_many([(REF.key, True, -1)])
    scheduler.leases.adopt(REF, touched.fence)
    return scheduler, transport, clock, store


async def test_first_poll_at_once_then_every_two_seconds() -> None:
    """Adopting a lease polls at once; the next poll is due 2 s after it started."""
    scheduler, transport, clock, _ = await make([body("generating_visuals")])
    scheduler.run_due()
    await scheduler.drain()
    assert len(transport.calls) == 1
    wait = scheduler.run_due()
    assert wait is not None and abs(wait - 2.0) < 1e-6
    clock.advance(1.0)
    scheduler.run_due()
    await scheduler.drain()
    assert len(transport.calls) == 1  # not yet


async def test_terminal_status_releases_the_lease_and_stops() -> None:
    """A terminal answer writes the snapshot, hands the lease back and schedules nothing."""
    scheduler, transport, _, store = await make([body("finalizing", "completed")])
    scheduler.run_due()
    await scheduler.drain()
    assert len(transport.calls) == 1
    assert not scheduler.owns(REF.key)
    assert scheduler.run_due() is None
    snap = await store.read(REF.key)
    assert snap is not None and snap.terminal


async def test_a_shrunken_fair_interval_brings_the_next_poll_forward() -> None:
    """Under contention the poll is spread out; when the share grows it moves earlier."""
    scheduler, _, _, _ = await make([body("generating_visuals")])
    census = FixedCensus()
    census.fair = 20.0
    scheduler.polls.census = census
    scheduler.run_due()
    await scheduler.drain()
    wait = scheduler.run_due()
    assert wait is not None and abs(wait - 20.0) < 1e-6
    census.fair = 6.0
    assert scheduler.reschedule_earlier() == 1
    wait = scheduler.run_due()
    assert wait is not None and abs(wait - 6.0) < 1e-6
    census.fair = 30.0  # never pushed later: the claim gap guards the other direction
    assert scheduler.reschedule_earlier() == 0


async def test_no_free_connection_means_no_claim_and_no_request() -> None:
    """A poll that cannot get a connection is put back without spending its floor slot.

    Claiming first and waiting for a connection afterwards is what let two requests for one
    container go out 0.03 s apart when upstream hung on more resources than the pool holds.
    """
    scheduler, transport, clock, store = await make([body("generating_visuals")])
    upstream = scheduler.polls._upstream
    held = [await upstream.acquire_slot(failing=False, wait_s=0) for _ in range(HEALTHY)]
    assert all(held) and await upstream.acquire_slot(failing=False, wait_s=0) is None
    upstream._pool_wait_s = 0.01
    scheduler.run_due()
    await scheduler.drain()
    assert transport.calls == []
    assert await store.redis.get("lp:{" + REF.key + "}:last") is None  # nothing claimed
    assert scheduler.polls._stats.pool_waits == 1
    for slot in held:
        assert slot is not None
        slot.release()
    clock.advance(0.5)
    scheduler.run_due()
    await scheduler.drain()
    assert len(transport.calls) == 1


async def test_a_failing_resource_cannot_take_a_healthy_connection() -> None:
    """Resources whose last poll failed draw from their own small pool."""
    scheduler, transport, _, _ = await make([body("generating_visuals")])
    upstream = scheduler.polls._upstream
    failing = [await upstream.acquire_slot(failing=True, wait_s=0) for _ in range(FAILING)]
    assert all(failing) and await upstream.acquire_slot(failing=True, wait_s=0) is None
    scheduler.run_due()  # healthy (no failures yet): still gets a connection
    await scheduler.drain()
    assert len(transport.calls) == 1


async def test_a_new_holder_waits_out_the_floor_after_redis_forgot() -> None:
    """Right after Redis lost everything, the first poll under a new lease waits one floor.

    The previous holder's last-poll time is gone with the data; it may have polled a moment ago.
    """
    scheduler, transport, clock, store = await make([body("generating_visuals")])
    await store.redis.delete(keys.MEMORY_SINCE)  # what a restart, a flush or a failover leaves
    scheduler.run_due()
    await scheduler.drain()
    assert transport.calls == []
    wait = scheduler.run_due()
    assert wait is not None and 0.9 <= wait <= 1.0
    await store.redis.set(keys.MEMORY_SINCE, 0)  # (the fake Redis clock does not move)
    clock.advance(wait)
    scheduler.run_due()
    await scheduler.drain()
    assert len(transport.calls) == 1


async def test_polls_due_together_start_apart_and_keep_their_phases() -> None:
    """Three cadence polls due in one instant start 50 ms apart (only ever later), and stay
    apart at every turn after; cold first polls are never held back."""
    scheduler, _, clock, store = await make([body("generating_visuals")])
    refs = [REF] + [
        ResourceRef(PROGRESS, f"cnt_{i}f2b8c1e-9a4d-4e7b-8c21-0a1b2c3d4e5f") for i in (1, 2)
    ]
    for ref in refs[1:]:
        [touched] = await store.touch_many([(ref.key, True, -1)])
        scheduler.leases.adopt(ref, touched.fence)
    started: list[tuple[float, str]] = []

    async def poll(lease: Lease) -> None:  # a cadence poll: the next one 2 s after this one
        started.append((clock.monotonic(), lease.ref.key))
        lease.cold = lease.in_flight = False
        scheduler._schedule(lease.ref.key, clock.monotonic() + 2.0)

    scheduler.polls.poll = poll  # type: ignore[method-assign]
    t0 = clock.monotonic()
    scheduler.run_due()
    await scheduler.drain()
    assert [t for t, _ in started] == [t0] * 3  # cold: all at once
    assert scheduler.spacing_s() == MAX_SPACING_S == 0.05

    async def run_until(t: float) -> None:
        while True:
            wait = scheduler.run_due()
            await scheduler.drain()  # the polls started record their start time
            if wait is None or clock.monotonic() + wait > t + 1e-9:
                return
            clock.advance(wait)

    for turn in (1, 2, 3):
        started.clear()
        clock.advance(t0 + 2.0 * turn - clock.monotonic())
        await run_until(t0 + 2.0 * turn + 0.2)
        offsets = [round(t - t0 - 2.0 * turn, 3) for t, _ in started]
        # Turn 1 queued them; after that each is due 2 s after its own start: apart for good.
        assert offsets == [0.0, 0.05, 0.1], (turn, offsets)
        assert sorted(k for _, k in started) == sorted(r.key for r in refs)
