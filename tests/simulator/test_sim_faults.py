"""Each fault kind as an aiohttp client sees it, plus counts, filters and the control API."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from proxy.simulator import DEFAULT_KEY, FaultRule, RequestRecord, RunningSimulator
from tests.integration.helpers import wait_until

AUTH = {"Authorization": f"Bearer {DEFAULT_KEY}"}


@pytest.fixture
def progress_url(sim: RunningSimulator) -> str:
    """The /progress URL of a fresh container."""
    cid, _ = sim.state.add_container()
    return f"{sim.url}/v1/content/{cid}/progress"


async def test_status_fault_answers_the_envelope(
    sim: RunningSimulator, session: aiohttp.ClientSession, progress_url: str
) -> None:
    """A 503 status fault answers the error envelope with code UNAVAILABLE and spends nothing."""
    sim.state.add_fault(FaultRule(kind="status", status=503, count=1))
    async with session.get(progress_url, headers=AUTH) as response:
        assert response.status == 503
        error = (await response.json())["error"]
    assert (error["code"], error["requestId"]) == ("UNAVAILABLE", response.headers["X-Request-Id"])
    assert sim.state.peek_budget(DEFAULT_KEY).remaining == 120
    async with session.get(progress_url, headers=AUTH) as response:
        assert response.status == 200  # count=1 has expired
    assert [r.fault for r in sim.state.requests()] == ["status", None]


async def test_latency_fault_delays_then_answers(
    sim: RunningSimulator, session: aiohttp.ClientSession, progress_url: str
) -> None:
    """A 150 ms latency fault answers normally after at least 150 ms."""
    sim.state.add_fault(FaultRule(kind="latency", latency_ms=150, count=1))
    started = time.monotonic()
    async with session.get(progress_url, headers=AUTH) as response:
        assert response.status == 200
    assert time.monotonic() - started >= 0.15


async def test_hang_fault_outlasts_the_client_timeout(
    sim: RunningSimulator, session: aiohttp.ClientSession, progress_url: str
) -> None:
    """A hang never answers: the client times out and the log shows no status."""
    finished: list[RequestRecord] = []
    sim.state.log.on_finish = finished.append
    sim.state.add_fault(FaultRule(kind="hang"))
    with pytest.raises(TimeoutError):
        async with session.get(
            progress_url, headers=AUTH, timeout=aiohttp.ClientTimeout(total=0.2)
        ) as response:
            await response.read()
    # The server notices the client leaving within its poll and finishes the record.
    assert await wait_until(lambda: bool(finished), 10, 0.01), sim.state.requests()
    [record] = finished
    assert record is sim.state.requests()[-1]
    assert (record.fault, record.status) == ("hang", None)


async def test_clearing_faults_releases_a_hang(
    sim: RunningSimulator, session: aiohttp.ClientSession, progress_url: str
) -> None:
    """DELETE /_sim/faults releases a hanging request with a 503."""
    sim.state.add_fault(FaultRule(kind="hang"))
    pending = asyncio.create_task(session.get(progress_url, headers=AUTH))
    held = await wait_until(lambda: [r.fault for r in sim.state.requests()] == ["hang"], 10, 0.01)
    assert held, sim.state.requests()
    async with session.delete(f"{sim.url}/_sim/faults") as response:
        assert (await response.json())["cleared"] == 1
    async with await pending as response:
        assert response.status == 503


async def test_garbage_fault_is_unparseable(
    sim: RunningSimulator, session: aiohttp.ClientSession, progress_url: str
) -> None:
    """A garbage fault is a 200 whose body is HTML, not JSON."""
    sim.state.add_fault(FaultRule(kind="garbage"))
    async with session.get(progress_url, headers=AUTH) as response:
        assert response.status == 200
        text = await response.text()
    assert text.startswith("<html>")
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


async def test_truncated_fault_cuts_the_json_in_half(
    sim: RunningSimulator, session: aiohttp.ClientSession, progress_url: str
) -> None:
    """A truncated fault is a 200 carrying the first half of the real body."""
    async with session.get(progress_url, headers=AUTH) as response:
        whole = await response.read()
    sim.state.add_fault(FaultRule(kind="truncated", count=1))
    async with session.get(progress_url, headers=AUTH) as response:
        assert response.status == 200
        cut = await response.read()
    assert cut == whole[: len(whole) // 2]
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut)


async def test_reset_fault_breaks_the_connection(
    sim: RunningSimulator, session: aiohttp.ClientSession, progress_url: str
) -> None:
    """A reset fault closes the connection without a response: the client raises."""
    sim.state.add_fault(FaultRule(kind="reset"))
    with pytest.raises(aiohttp.ClientError):
        async with session.get(progress_url, headers=AUTH) as response:
            await response.read()
    assert {r.status for r in sim.state.requests()} == {None}


async def test_rate_limit_fault_forces_429(
    sim: RunningSimulator, session: aiohttp.ClientSession, progress_url: str
) -> None:
    """A rate_limit fault answers 429 RATE_LIMITED with the rule's Retry-After."""
    sim.state.add_fault(FaultRule(kind="rate_limit", retry_after_s=7, count=1))
    async with session.get(progress_url, headers=AUTH) as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "7"
        assert response.headers["X-RateLimit-Remaining"] == "0"
        assert (await response.json())["error"]["code"] == "RATE_LIMITED"


async def test_path_filter_and_control_api(
    sim: RunningSimulator, session: aiohttp.ClientSession, progress_url: str
) -> None:
    """A rule posted over /_sim with path_contains only hits matching paths."""
    _, job_id = sim.state.add_container()
    rule = {"kind": "status", "status": 500, "path_contains": "/jobs/"}
    async with session.post(f"{sim.url}/_sim/faults", json=rule) as response:
        assert response.status == 201
        assert (await response.json())["fault"]["id"] == 1
    async with session.get(f"{sim.url}/v1/jobs/{job_id}", headers=AUTH) as response:
        assert response.status == 500
        assert (await response.json())["error"]["code"] == "INTERNAL"
    async with session.get(progress_url, headers=AUTH) as response:
        assert response.status == 200
