"""Lease failover, graceful hand-back, and fencing of a stalled old poller."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.conftest import ProxyFactory, Sim
from tests.integration.helpers import gaps, wait_until

pytestmark = [pytest.mark.integration]


async def _keep_polling(
    session: aiohttp.ClientSession, url: str, stop: asyncio.Event, versions: list[tuple[str, str]]
) -> None:
    while not stop.is_set():
        async with session.get(url) as resp:
            if resp.status == 200:
                body = await resp.json()
                versions.append((body["stage"], resp.headers["ETag"]))
        await asyncio.sleep(0.25)


def _after(sim: Sim, cid: str, since: float) -> list[float]:
    """The upstream requests for ``cid`` made after ``since`` (monotonic)."""
    return [r["t_mono"] for r in sim.requests(cid) if r["t_mono"] > since]


@pytest.mark.timeout(60)
async def test_killed_lease_holder_is_replaced_within_the_lease_time(
    sim: Sim, proxies: ProxyFactory
) -> None:
    """SIGKILL the polling replica: another takes over within the lease TTL."""
    a = proxies(PROXY_LEASE_TTL_S="3")
    b = proxies(PROXY_LEASE_TTL_S="3")
    cid, _ = sim.container([["generating_visuals", 60.0]])
    stop = asyncio.Event()
    seen: list[tuple[str, str]] = []
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{a.url}/v1/content/{cid}/progress") as resp:
            assert resp.status == 200  # a fetched it cold, so a holds the lease
        poller = asyncio.create_task(
            _keep_polling(session, f"{b.url}/v1/content/{cid}/progress", stop, seen)
        )
        # A baseline: b watches (its poller has an answer) and a polls for 4.5 s more.
        assert await wait_until(lambda: bool(seen), 10), "b never answered"
        await asyncio.sleep(4.5)
        killed_at = time.monotonic()
        a.kill()
        # b takes over: wait for two of its upstream polls (the takeover and the next one).
        await wait_until(lambda: len(_after(sim, cid, killed_at)) >= 2, 20, 0.2)
        stop.set()
        await poller
    times = [r["t_mono"] for r in sim.requests(cid)]
    before = [t for t in times if t < killed_at]
    after = [t for t in times if t > killed_at]
    assert before and after
    # Takeover: the lease (3 s) expires, b's next interest flush (1 s) takes it and polls.
    assert after[0] - before[-1] <= 3.0 + 1.0 + 2.0 + 0.5, (before, after)
    assert min(gaps(times)) >= 0.95


@pytest.mark.timeout(60)
async def test_sigterm_hands_the_lease_back_at_once(sim: Sim, proxies: ProxyFactory) -> None:
    """A graceful stop releases leases: the survivor polls long before the lease would expire."""
    a = proxies(PROXY_LEASE_TTL_S="20")
    b = proxies(PROXY_LEASE_TTL_S="20")
    cid, _ = sim.container([["generating_visuals", 60.0]])
    stop = asyncio.Event()
    seen: list[tuple[str, str]] = []
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{a.url}/v1/content/{cid}/progress") as resp:
            assert resp.status == 200
        poller = asyncio.create_task(
            _keep_polling(session, f"{b.url}/v1/content/{cid}/progress", stop, seen)
        )
        # A baseline: b watches (its poller has an answer), 3 s for its interest to settle.
        assert await wait_until(lambda: bool(seen), 10), "b never answered"
        await asyncio.sleep(3)
        stopped_at = time.monotonic()
        assert a.stop() == 0
        await wait_until(lambda: bool(_after(sim, cid, stopped_at)), 20, 0.2)
        stop.set()
        await poller
    times = [r["t_mono"] for r in sim.requests(cid)]
    after = [t for t in times if t > stopped_at]
    assert after and after[0] - stopped_at < 4.0, (times, stopped_at)
    assert '"event":"proxy_stopped"' in a.all_output()


@pytest.mark.timeout(60)
async def test_a_stalled_old_holder_cannot_overwrite_newer_state(
    sim: Sim, proxies: ProxyFactory
) -> None:
    """SIGSTOP the holder mid-request; after takeover its late answer is fenced out."""
    a = proxies(PROXY_LEASE_TTL_S="3", PROXY_UPSTREAM_TIMEOUT_S="30")
    b = proxies(PROXY_LEASE_TTL_S="3")
    cid, _ = sim.container([["queued_work", 3.0], ["generating_visuals", 60.0]])
    stop = asyncio.Event()
    seen: list[tuple[str, str]] = []
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{a.url}/v1/content/{cid}/progress") as resp:
            assert resp.status == 200
        poller = asyncio.create_task(
            _keep_polling(session, f"{b.url}/v1/content/{cid}/progress", stop, seen)
        )
        # a's next poll (early stage) is held by the upstream for 4 s; freeze a meanwhile.
        sim.fault(kind="latency", latency_ms=4000, path_contains=cid, count=1)
        assert await wait_until(
            lambda: any(r["status"] is None for r in sim.requests(cid)), timeout_s=5
        )
        a.pause()
        # The lease expires; b takes over and moves on to a later stage.
        assert await wait_until(lambda: "generating_visuals" in (s for s, _ in seen), 20)
        a.resume()
        # A window after a's return: its late answer is fenced out and b's clients never see
        # the earlier stage again.
        await asyncio.sleep(4)
        stop.set()
        await poller
    stages = [stage for stage, _ in seen]
    first_late = stages.index("generating_visuals")
    assert "queued_work" not in stages[first_late:], stages  # never backwards
    assert await wait_until(lambda: "write_fenced_out" in a.all_output(), timeout_s=5), a.output()
