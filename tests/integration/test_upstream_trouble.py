"""Upstream failures: stale serving, the cluster-wide 429 cooldown, negative caching, bad keys."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.conftest import ProxyFactory, Sim
from tests.integration.helpers import wait_until

pytestmark = [pytest.mark.integration]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "status", "status": 503},
        {"kind": "garbage"},
        {"kind": "reset"},
        {"kind": "hang"},
    ],
)
async def test_last_good_snapshot_is_served_stale_during_upstream_trouble(
    sim: Sim, proxies: ProxyFactory, fault: dict[str, object]
) -> None:
    """5xx, garbage, resets and hangs never reach clients while a snapshot exists."""
    proxy = proxies(PROXY_UPSTREAM_TIMEOUT_S="2")
    cid, _ = sim.container([["generating_visuals", 60.0]])
    url = f"{proxy.url}/v1/content/{cid}/progress"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            good = await resp.read()
        sim.fault(path_contains=cid, **fault)
        statuses: list[int] = []
        stale_seen = False
        # At least 16 polls (8 s of trouble, every answer checked), and on until one is marked
        # stale: how soon that happens depends on the upstream timeout and on the load.
        deadline = time.monotonic() + 20
        while len(statuses) < 16 or (not stale_seen and time.monotonic() < deadline):
            await asyncio.sleep(0.5)
            async with session.get(url) as resp:
                statuses.append(resp.status)
                body = await resp.read()
                if "stale" in resp.headers["Cache-Status"]:
                    stale_seen = True
                    assert body.startswith(good[:30])  # the last good body, same container
        assert set(statuses) == {200}
        assert stale_seen
        sim.clear_faults()
        assert await _eventually_fresh(session, url)


async def _eventually_fresh(session: aiohttp.ClientSession, url: str) -> bool:
    for _ in range(40):
        async with session.get(url) as resp:
            if "stale" not in resp.headers["Cache-Status"]:
                return True
        await asyncio.sleep(0.5)
    return False


def _resumed_after_429(sim: Sim, cids: list[str]) -> bool:
    """Whether an upstream request followed the (first) 429 for any of ``cids``."""
    log = [r for cid in cids for r in sim.requests(cid)]
    limited = [r["t_mono"] for r in log if r["status"] == 429]
    return bool(limited) and any(r["t_mono"] > limited[0] for r in log)


@pytest.mark.timeout(60)
async def test_429_sets_one_cooldown_for_every_replica(sim: Sim, proxies: ProxyFactory) -> None:
    """After a 429 with Retry-After: 4 no replica calls upstream for 4 s."""
    a, b = proxies(), proxies()
    cids = [sim.container([["generating_visuals", 60.0]])[0] for _ in range(3)]
    async with aiohttp.ClientSession() as session:
        for i, cid in enumerate(cids):
            async with session.get(f"{(a, b)[i % 2].url}/v1/content/{cid}/progress") as resp:
                assert resp.status == 200
        sim.fault(kind="rate_limit", retry_after_s=4, count=1)
        # Watch for 12 s at least (the 429, the 4 s cooldown, the polls after it), and on
        # until polling has resumed after the 429 (under load it may come late).
        window_end, deadline = time.monotonic() + 12, time.monotonic() + 30
        while time.monotonic() < window_end or (
            time.monotonic() < deadline
            and not await asyncio.to_thread(_resumed_after_429, sim, cids)
        ):
            for i, cid in enumerate(cids):
                async with session.get(f"{(a, b)[i % 2].url}/v1/content/{cid}/progress") as resp:
                    assert resp.status == 200  # stale, never an error
            await asyncio.sleep(0.5)
    log = [r for cid in cids for r in sim.requests(cid)]
    limited = [r["t_mono"] for r in log if r["status"] == 429]
    assert len(limited) == 1
    after = sorted(r["t_mono"] for r in log if r["t_mono"] > limited[0])
    assert after, "polling resumed after the cooldown"
    assert after[0] - limited[0] >= 3.9, after[0] - limited[0]


@pytest.mark.timeout(40)
async def test_404_is_passed_on_and_negative_cached(sim: Sim, proxies: ProxyFactory) -> None:
    """An unknown container: 404 in the envelope, one upstream request for many clients."""
    a, b = proxies(), proxies()
    missing = "cnt_00000000-0000-4000-8000-000000000000"
    async with aiohttp.ClientSession() as session:
        for i in range(20):
            async with session.get(f"{(a, b)[i % 2].url}/v1/content/{missing}/progress") as resp:
                assert resp.status == 404
                body = await resp.json()
                assert body["error"]["code"] == "NOT_FOUND"
                assert body["error"]["requestId"].startswith("req_")
            await asyncio.sleep(0.1)  # 2 s of clients, all answered from the one cached 404
    assert len(sim.requests(missing)) == 1


@pytest.mark.timeout(40)
async def test_rejected_key_is_an_operator_error(sim: Sim, proxies: ProxyFactory) -> None:
    """A key the upstream refuses: clients get 502 UPSTREAM_AUTH, /readyz says why, no leak."""
    bad_key = "lp_live_WRONGKEYID000001_" + "x" * 43
    proxy = proxies(LAYERS_API_KEY=bad_key)
    cid, _ = sim.container([["generating_visuals", 60.0]])
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{proxy.url}/v1/content/{cid}/progress") as resp:
            assert resp.status == 502
            body = await resp.json()
            assert body["error"]["code"] == "UPSTREAM_AUTH"
            assert bad_key not in await resp.text()
        async with session.get(f"{proxy.url}/readyz") as resp:
            assert resp.status == 503
            assert "rejected" in (await resp.json())["checks"]["upstream_key"]
    assert await wait_until(lambda: "upstream_key_rejected" in proxy.all_output(), 5)
    assert bad_key not in proxy.all_output()
    assert "x" * 43 not in proxy.all_output()


@pytest.mark.timeout(30)
async def test_bad_input_is_a_4xx_and_costs_nothing(sim: Sim, proxies: ProxyFactory) -> None:
    """Invalid ids, long URLs and huge headers: clear 4xx envelopes, zero upstream requests."""
    proxy = proxies()
    async with aiohttp.ClientSession() as session:
        for bad in ("nope", "cnt_123", "job_01HXZ9ABCDEFGHJKMNPQRSTVWX", "%00", "cnt_" + "a" * 300):
            async with session.get(f"{proxy.url}/v1/content/{bad}/progress") as resp:
                assert resp.status == 400, bad
                assert (await resp.json())["error"]["code"] == "VALIDATION"
        async with session.get(f"{proxy.url}/v1/jobs/cnt_nope") as resp:
            assert resp.status == 400
        async with session.get(f"{proxy.url}/v1/content/{'a' * 9000}/progress") as resp:
            assert resp.status == 414
            assert (await resp.json())["error"]["code"] == "VALIDATION"
        async with session.get(f"{proxy.url}/healthz", headers={"X-Big": "v" * 20000}) as resp:
            assert resp.status == 431
        async with session.get(f"{proxy.url}/v1/nothing-here") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "NOT_FOUND"
        async with session.post(f"{proxy.url}/v1/content/x/progress") as resp:
            assert resp.status == 405
    assert sim.requests() == []
