"""Bounded upstream requests: connection slots, timeouts, body limits, one request per fetch.

Slot tests use a hung fake transport; the rest run the real ``AiohttpTransport`` against the
simulator (and one tiny endless server) on loopback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping

import orjson
import pytest
from aiohttp import web

from proxy.redaction import REDACTED, Secret
from proxy.resources import JOB, PROGRESS, ResourceKind, ResourceRef
from proxy.settings import load_settings
from proxy.simulator import DEFAULT_KEY, FaultRule, RunningSimulator, running_simulator
from proxy.simulator.faults import FaultKind
from proxy.simulator.state import SimulatorState
from proxy.upstream.client import (
    AiohttpTransport,
    Outcome,
    RawResponse,
    UpstreamClient,
    UpstreamResult,
)

CID = "cnt_3f2b8c1e-9a4d-4e7b-8c21-0a1b2c3d4e5f"
BODY = {"containerId": CID, "status": "processing", "stage": "s", "stageProgress": 0.5}


class HungTransport:
    """Never answers URLs containing "hung"; answers every other GET at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def get(self, url: str, headers: Mapping[str, str], timeout_s: float) -> RawResponse:
        if "hung" in url:
            await self.release.wait()
        return RawResponse(200, {}, orjson.dumps(BODY))

    async def close(self) -> None:
        return None


def slot_client(transport: HungTransport, pool_wait_s: float = 2.0) -> UpstreamClient:
    """Two healthy slots and two failing ones."""
    return UpstreamClient(
        base_url="http://layers.test",
        api_key=Secret("k"),
        transport=transport,
        timeout_s=5,
        wall_clock=time.time,
        max_connections=4,
        failing_connections=2,
        pool_wait_s=pool_wait_s,
    )


async def hold_hung(client: UpstreamClient) -> asyncio.Task[UpstreamResult]:
    """Take a failing slot and spend it on a GET that never returns."""
    slot = await client.acquire_slot(failing=True, wait_s=0)
    assert slot is not None

    async def run() -> UpstreamResult:
        with slot:
            return await client.fetch_path("/v1/hung", org=None)

    return asyncio.create_task(run())


async def test_hung_failing_resources_cannot_starve_healthy_ones() -> None:
    """Failing pool full of hung GETs: a failing acquire gives up in time, a healthy one works."""
    transport = HungTransport()
    client = slot_client(transport)
    hung = [await hold_hung(client) for _ in range(2)]
    assert client.slots.free(failing=True) == 0

    started = time.monotonic()
    assert await client.acquire_slot(failing=True, wait_s=0.1) is None
    waited = time.monotonic() - started
    assert 0.1 <= waited < 1.0

    started = time.monotonic()
    healthy = await client.acquire_slot(failing=False, wait_s=0.1)
    assert healthy is not None
    with healthy:
        result = await client.fetch(ResourceRef(PROGRESS, CID))
    assert time.monotonic() - started < 0.1
    assert result.outcome is Outcome.OK
    assert client.slots.free(failing=False) == 2
    assert not any(task.done() for task in hung)

    transport.release.set()
    await asyncio.gather(*hung)
    assert client.slots.free(failing=True) == 2


async def test_a_released_slot_goes_to_a_waiter_and_the_default_wait_is_pool_wait_s() -> None:
    """A waiter gets the slot as soon as one is released; without wait_s it waits pool_wait_s."""
    transport = HungTransport()
    client = slot_client(transport, pool_wait_s=0.2)
    held = [await client.acquire_slot(failing=False) for _ in range(2)]
    started = time.monotonic()
    assert await client.acquire_slot() is None
    assert 0.2 <= time.monotonic() - started < 1.0

    waiter = asyncio.create_task(client.acquire_slot(wait_s=5))
    await asyncio.sleep(0)  # one loop step: the waiter is now blocked on the pool's semaphore
    assert not waiter.done()
    first = held[0]
    assert first is not None
    first.release()
    first.release()  # idempotent: must not free a second slot
    got = await asyncio.wait_for(waiter, 1)
    assert got is not None and not got.failing
    assert client.slots.free(failing=False) == 0


@pytest.mark.parametrize(("max_conn", "failing", "healthy"), [(64, 16, 48), (17, 16, 1)])
async def test_the_connector_allows_every_slot(max_conn: int, failing: int, healthy: int) -> None:
    """from_settings sizes the aiohttp connector to both pools, so it never waits first."""
    settings = load_settings(
        env={
            "LAYERS_API_KEY": "k",
            "PROXY_AUTH": "none",
            "REDIS_URL": "memory://",
            "PROXY_UPSTREAM_MAX_CONNECTIONS": str(max_conn),
            "PROXY_UPSTREAM_FAILING_CONNECTIONS": str(failing),
        }
    )
    client = UpstreamClient.from_settings(settings, wall_clock=time.time)
    try:
        assert (client.slots.free(failing=False), client.slots.free(failing=True)) == (
            healthy,
            failing,
        )
        transport = client._transport
        assert isinstance(transport, AiohttpTransport)
        assert transport.connection_limit == healthy + failing
    finally:
        await client.close()


# -- the real transport against the simulator ----------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    async with running_simulator(SimulatorState(seed=7)) as running:
        yield running


def real_client(sim: RunningSimulator, *, read_s: float = 5, total_s: float = 5) -> UpstreamClient:
    return UpstreamClient(
        base_url=sim.url,
        api_key=Secret(DEFAULT_KEY),
        transport=AiohttpTransport(
            max_connections=4,
            connect_timeout_s=1,
            read_timeout_s=read_s,
            pool_wait_s=0.5,
            max_body_bytes=65536,
        ),
        timeout_s=total_s,
        wall_clock=time.time,
    )


async def fetch_with(
    sim: RunningSimulator, rule: FaultRule, *, read_s: float = 5, total_s: float = 5
) -> tuple[UpstreamResult, float]:
    """Fetch a fresh container's progress under ``rule``; the result and the seconds it took."""
    cid, _ = sim.state.add_container()
    sim.state.add_fault(rule)
    client = real_client(sim, read_s=read_s, total_s=total_s)
    started = time.monotonic()
    try:
        return await client.fetch(ResourceRef(PROGRESS, cid)), time.monotonic() - started
    finally:
        sim.state.clear_faults()
        await client.close()


async def test_a_stall_ends_at_the_read_timeout(sim: RunningSimulator) -> None:
    """No first byte within read_timeout_s: TIMEOUT long before the total timeout."""
    result, took = await fetch_with(sim, FaultRule(kind="stall"), read_s=0.3)
    assert (result.outcome, result.detail) == (Outcome.TIMEOUT, "timeout: read stalled for 0.3s")
    assert 0.3 <= took < 2.0


async def test_a_slow_drip_ends_at_the_read_timeout(sim: RunningSimulator) -> None:
    """Headers at once, then 0.5 s per byte: the gap between reads is over read_timeout_s."""
    result, took = await fetch_with(sim, FaultRule(kind="drip", latency_ms=500), read_s=0.2)
    assert (result.outcome, result.detail) == (Outcome.TIMEOUT, "timeout: read stalled for 0.2s")
    assert took < 2.0


async def test_a_fast_drip_ends_at_the_total_timeout(sim: RunningSimulator) -> None:
    """Every read is quick (20 ms) but the whole body would take seconds: the total cuts it."""
    rule = FaultRule(kind="drip", latency_ms=20)
    result, took = await fetch_with(sim, rule, read_s=1, total_s=0.5)
    assert (result.outcome, result.detail) == (Outcome.TIMEOUT, "timeout: no answer within 0.5s")
    assert 0.5 <= took < 2.0


async def test_an_oversize_body_is_refused_by_content_length(sim: RunningSimulator) -> None:
    """A 200000-byte body against a 65536-byte limit is BAD_BODY."""
    result, _ = await fetch_with(sim, FaultRule(kind="oversize"))
    assert (result.outcome, result.detail) == (Outcome.BAD_BODY, "body over 65536 bytes")


async def test_an_endless_chunked_body_is_cut_while_reading() -> None:
    """No Content-Length and a body that never ends: reading stops past the limit."""
    sent = 0

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse()
        await response.prepare(request)
        while True:  # ends when the client goes away
            await response.write(b"x" * 1024)
            sent += 1024

    app = web.Application()
    app.router.add_get("/v1/content/{id}/progress", endless)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    transport = AiohttpTransport(max_connections=1, connect_timeout_s=1, max_body_bytes=4096)
    try:
        raw = await transport.get(f"http://{host}:{port}/v1/content/x/progress", {}, 5)
    finally:
        await transport.close()
        await runner.cleanup()
    assert (raw.status, raw.oversize, raw.body) == (200, True, b"")
    assert sent < 10 * 1024 * 1024


@pytest.mark.parametrize(
    ("kind", "ref_kind", "detail"),
    [
        ("wrong_id", PROGRESS, "containerId mismatch"),
        ("wrong_id", JOB, "jobId mismatch"),
        ("missing_fields", PROGRESS, "missing field containerId"),
        ("missing_fields", JOB, "missing field jobId"),
        ("garbage", PROGRESS, "unparseable body"),
        ("truncated", PROGRESS, "unparseable body"),
    ],
)
async def test_simulated_bad_bodies_are_never_ok(
    sim: RunningSimulator, kind: FaultKind, ref_kind: ResourceKind, detail: str
) -> None:
    """The simulator's body faults all come back as BAD_BODY with the reason."""
    cid, job_id = sim.state.add_container()
    assert job_id is not None
    ref = ResourceRef(PROGRESS, cid) if ref_kind is PROGRESS else ResourceRef(JOB, job_id)
    sim.state.add_fault(FaultRule(kind=kind))
    client = real_client(sim)
    try:
        result = await client.fetch(ref)
    finally:
        await client.close()
    assert (result.outcome, result.detail) == (Outcome.BAD_BODY, detail)


async def test_a_reflecting_upstream_never_hands_back_the_key(sim: RunningSimulator) -> None:
    """reflect: the echoed Authorization and the record's lastError come back redacted."""
    cid, _ = sim.state.add_container()
    sim.state.add_fault(FaultRule(kind="reflect"))
    client = real_client(sim)
    try:
        progress = await client.fetch(ResourceRef(PROGRESS, cid))
        record = await client.fetch_path(f"/v1/content/{cid}", org=None)
    finally:
        await client.close()
    assert (progress.outcome, record.outcome) == (Outcome.OK, Outcome.OK)
    for result in (progress, record):
        assert DEFAULT_KEY not in result.body.decode()
        assert orjson.loads(result.body) == result.parsed
    assert progress.parsed["echo"]["Authorization"] == f"Bearer {REDACTED}"
    message = record.parsed["lastError"]["message"]
    assert message == f"Request was sent with Authorization: Bearer {REDACTED}"


async def test_a_reset_is_one_request_not_a_silent_retry(sim: RunningSimulator) -> None:
    """aiohttp would resend a GET once on a dropped connection; the transport must not."""
    result, _ = await fetch_with(sim, FaultRule(kind="reset"))
    assert result.outcome is Outcome.NETWORK
    assert [r.fault for r in sim.state.requests()] == ["reset"]
