"""Jobs (upstream ETags, permanent terminal states), the batch endpoint, and lastError."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.conftest import ProxyFactory, Sim
from tests.integration.helpers import poll_until_terminal
from tests.integration.test_push import read_events

pytestmark = [pytest.mark.integration]


@pytest.mark.timeout(60)
async def test_jobs_use_upstream_etags_and_stop_for_good(sim: Sim, proxies: ProxyFactory) -> None:
    """Jobs: If-None-Match upstream (304s count as unchanged), client 304s, no polls once done."""
    a, b = proxies(), proxies()
    _, job = sim.container([["generating_visuals", 5.0]], queued_s=3)
    async with aiohttp.ClientSession() as session:
        seen = await poll_until_terminal(
            session, f"{a.url}/v1/jobs/{job}", every_s=0.3, deadline_s=20
        )
        assert seen.final is not None and seen.final["status"] == "completed"
        assert 304 in seen.statuses  # our ETag, answered from memory
        done = len(sim.requests(job))
        for i in range(6):  # a 3 s window in which no upstream request may follow
            async with session.get(f"{(a, b)[i % 2].url}/v1/jobs/{job}") as resp:
                assert resp.status == 200
                assert (await resp.json())["status"] == "completed"
            await asyncio.sleep(0.5)
    log = sim.requests(job)
    assert len(log) == done  # terminal jobs are cached for good
    assert any(r["if_none_match"] for r in log[1:])
    assert any(r["status"] == 304 for r in log)  # the queued phase did not change the body


@pytest.mark.timeout(40)
async def test_job_stream(sim: Sim, proxies: ProxyFactory) -> None:
    """GET /v1/jobs/{id}/stream sends job events to the terminal one."""
    proxy = proxies()
    _, job = sim.container([["generating_visuals", 3.0]])
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{proxy.url}/v1/jobs/{job}/stream") as resp,
    ):
        events = [e for e in await read_events(resp, 15) if "data" in e]
    assert {e["event"] for e in events} == {"job"}
    progress = [e["data"].get("progress", 1.0) for e in events]
    assert progress == sorted(progress)
    assert events[-1]["data"]["status"] == "completed"


@pytest.mark.timeout(40)
async def test_batch_answers_in_order_with_errors_per_item(sim: Sim, proxies: ProxyFactory) -> None:
    """ids=a,b,c: bodies in the order asked; bad and unknown ids as error items; one fetch each."""
    a, b = proxies(), proxies()
    c1, _ = sim.container([["generating_visuals", 30.0]])
    c2, _ = sim.container([["finalizing", 30.0]])
    missing = "cnt_00000000-0000-4000-8000-000000000001"
    ids = f"{c2},nope,{c1},{missing}"
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(
            *(session.get(f"{(a, b)[i % 2].url}/v1/content/progress?ids={ids}") for i in range(40))
        )
        bodies = [await r.json() for r in results]
        assert {r.status for r in results} == {200}
        etag = results[0].headers["ETag"]
        async with session.get(
            f"{a.url}/v1/content/progress?ids={ids}", headers={"If-None-Match": etag}
        ) as resp:
            assert resp.status in (200, 304)
        async with session.get(f"{a.url}/v1/content/progress?ids=" + ",".join([c1] * 101)) as r:
            assert r.status == 400
    items = bodies[0]["items"]
    assert [i.get("containerId") for i in items] == [c2, "nope", c1, missing]
    assert items[0]["stage"] == "finalizing" and items[2]["stage"] == "generating_visuals"
    assert items[1]["error"]["code"] == "VALIDATION"
    assert items[3]["error"]["code"] == "NOT_FOUND"
    # 40 batch requests over 2 replicas: one upstream request per container.
    assert len(sim.requests(c1)) == 1 and len(sim.requests(c2)) == 1
    assert len(sim.requests(missing)) == 1


@pytest.mark.timeout(40)
async def test_failed_container_explains_itself_on_the_stream(
    sim: Sim, proxies: ProxyFactory
) -> None:
    """A failed container: the final stream event carries lastError; the poll body stays drop-in."""
    proxy = proxies()
    cid, _ = sim.container(
        [["generating_visuals", 3.0]], ending="failed", error_code="MISSING_APP_DEMO"
    )
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{proxy.url}/v1/content/{cid}/progress/stream") as resp:
            events = [e for e in await read_events(resp, 15) if "data" in e]
        async with session.get(f"{proxy.url}/v1/content/{cid}/progress") as resp:
            poll_body = await resp.json()
    final = events[-1]["data"]
    assert final["status"] == "failed"
    assert final["lastError"]["code"] == "MISSING_APP_DEMO"
    assert "lastError" not in poll_body
    assert set(poll_body) == {
        "containerId",
        "status",
        "stage",
        "stageProgress",
        "etaSeconds",
        "updatedAt",
    }
    record_fetches = [r for r in sim.requests(cid) if r["kind"] == "container"]
    assert len(record_fetches) == 1
