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
from proxy.services.scheduler import Scheduler
from proxy.services.stats import Stats
from proxy.settings import load_settings
from proxy.store.redis_store import BudgetPolicy, RedisStore
from proxy.upstream.client import RawResponse, UpstreamClient

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
    [touched] = await store.touch_many([(REF.key, True, -1)])
    scheduler.adopt(REF, touched.fence)
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
    scheduler.census = census  # type: ignore[assignment]
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
