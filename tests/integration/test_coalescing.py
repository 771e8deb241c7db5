"""One upstream poll loop per container, whatever the number of clients and replicas."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.conftest import ProxyFactory, Sim
from tests.integration.helpers import TERMINAL, gaps, poll_until_terminal

pytestmark = [pytest.mark.integration]


@pytest.mark.timeout(60)
async def test_hundreds_of_clients_on_three_replicas_make_one_poll_loop(
    sim: Sim, proxies: ProxyFactory
) -> None:
    """150 clients × 2 containers on 3 replicas: cadence-spaced upstream calls; all see the end."""
    replicas = [proxies() for _ in range(3)]
    containers = [
        sim.container([["generating_visuals", 6.0], ["finalizing", 3.0]]),
        sim.container([["analyzing", 4.0], ["opening_pr", 4.0]], ending="failed"),
    ]
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        urls = [
            f"{replicas[i % 3].url}/v1/content/{cid}/progress"
            for i in range(150)
            for cid, _ in containers
        ]
        tasks = [
            poll_until_terminal(session, url, every_s=0.5, deadline_s=30, jitter_s=0.5)
            for url in urls
        ]
        results = await asyncio.gather(*tasks)
    duration = time.monotonic() - started
    assert all(r.final is not None and r.final["status"] in TERMINAL for r in results)
    for cid, _ in containers:
        log = [r for r in sim.requests(cid) if r["kind"] == "progress"]
        times = [r["t_mono"] for r in log]
        # Cadence: every 2 s (plus the cold fetch); never closer than the 1 s floor.
        assert len(times) <= duration / 2 + 2, times
        assert min(gaps(times)) >= 0.95, gaps(times)
        # No upstream poll after the first client saw the terminal answer (the simulator logs
        # wall time, the clients note it when the terminal body arrives).
        cid_url = f"/v1/content/{cid}/progress"
        first_terminal = min(
            r.terminal_seen_wall
            for r, url in zip(results, urls, strict=True)
            if url.endswith(cid_url) and r.terminal_seen_wall is not None
        )
        late = [r["t_wall"] for r in log if r["t_wall"] > first_terminal]
        assert not late, (first_terminal, late)
    client_requests = sum(len(r.statuses) for r in results)
    upstream = sum(len(sim.requests(cid)) for cid, _ in containers)
    assert client_requests > 20 * upstream


@pytest.mark.timeout(40)
async def test_cold_burst_on_several_replicas_is_one_upstream_request(
    sim: Sim, proxies: ProxyFactory
) -> None:
    """500 concurrent first requests over 3 replicas make exactly one upstream request."""
    replicas = [proxies() for _ in range(3)]
    cid, _ = sim.container([["generating_visuals", 30.0]])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(i: int) -> tuple[int, str]:
            url = f"{replicas[i % 3].url}/v1/content/{cid}/progress"
            async with session.get(url) as resp:
                await resp.read()
                return resp.status, resp.headers.get("Cache-Status", "")

        answers = await asyncio.gather(*(one(i) for i in range(500)))
    assert {status for status, _ in answers} == {200}
    assert len(sim.requests(cid)) == 1
    # At most one answer made the request (none when a replica's interest flush took the lease
    # before any cold request did, which happens under load); every other one waited for it or
    # found its result stored. Only the one upstream fetch is counted exactly.
    assert sum("stored" in cs for _, cs in answers) <= 1
    assert all("collapsed" in cs or cs.endswith("; hit") or "stored" in cs for _, cs in answers)
    assert any("collapsed" in cs for _, cs in answers)


@pytest.mark.timeout(40)
async def test_polling_stops_after_the_linger(sim: Sim, proxies: ProxyFactory) -> None:
    """When the last client goes away, upstream polling stops within the linger."""
    proxy = proxies(PROXY_LINGER_S="4")
    cid, _ = sim.container([["generating_visuals", 60.0]])
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.get(f"{proxy.url}/v1/content/{cid}/progress") as resp:
                assert resp.status == 200
            await asyncio.sleep(1)
        last_client = time.monotonic()
    # A window anchored to the last client: polling must stop within the 4 s linger, so
    # nothing may reach the upstream in it after that.
    await asyncio.sleep(9)
    times = [r["t_mono"] for r in sim.requests(cid)]
    assert times[-1] <= last_client + 4.0, (times, last_client)
    assert len(times) >= 2


@pytest.mark.timeout(40)
async def test_terminal_costs_nothing_and_is_revalidated_once_later(
    sim: Sim, proxies: ProxyFactory
) -> None:
    """After completion, watching costs no upstream calls until the revalidation age."""
    proxy = proxies(PROXY_REVALIDATE_TERMINAL_AFTER_S="6", PROXY_LINGER_S="30")
    cid, _ = sim.container([["finalizing", 2.0]])
    url = f"{proxy.url}/v1/content/{cid}/progress"
    async with aiohttp.ClientSession() as session:
        seen = await poll_until_terminal(session, url, every_s=0.3, deadline_s=10)
        assert seen.final is not None and seen.final["status"] == "completed"
        after_terminal = len(sim.requests(cid))
        for _ in range(8):  # 4 s of watching a terminal snapshot
            async with session.get(url) as resp:
                assert resp.status == 200
            await asyncio.sleep(0.5)
        assert len(sim.requests(cid)) == after_terminal
        # Past the revalidation age a client's request makes one upstream request: keep
        # watching until it has come, then 3 s more, in which no second one may follow.
        deadline = time.monotonic() + 20
        while len(sim.requests(cid)) == after_terminal and time.monotonic() < deadline:
            async with session.get(url) as resp:
                assert resp.status == 200
            await asyncio.sleep(0.5)
        for _ in range(6):
            async with session.get(url) as resp:
                assert resp.status == 200
            await asyncio.sleep(0.5)
    assert len(sim.requests(cid)) == after_terminal + 1
