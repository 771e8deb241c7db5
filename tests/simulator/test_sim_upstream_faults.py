"""Faults for an untrusted upstream: stall, drip, wrong_id, missing_fields, oversize, reflect.

Real HTTP against a served simulator; the state runs on a manual clock, so a body fetched twice
is the same body and the log's timestamps are exact.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from proxy.simulator import DEFAULT_KEY, FaultRule, ManualClock, RunningSimulator

AUTH = {"Authorization": f"Bearer {DEFAULT_KEY}"}


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def get_json(
    session: aiohttp.ClientSession, url: str, **headers: str
) -> tuple[int, dict[str, Any]]:
    async with session.get(url, headers={**AUTH, **headers}) as response:
        return response.status, await response.json()


@pytest.fixture
def ids(sim: RunningSimulator) -> tuple[str, str]:
    """A fresh container and its job."""
    cid, job_id = sim.state.add_container()
    assert job_id is not None
    return cid, job_id


def add(sim: RunningSimulator, **rule: Any) -> None:
    sim.state.add_fault(FaultRule.from_json(rule))


async def raw_get(
    sim: RunningSimulator, path: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send a GET on a bare socket, so no client library retry can hide what the server does."""
    reader, writer = await asyncio.open_connection(sim.host, sim.port)
    head = f"GET {path} HTTP/1.1\r\nHost: sim\r\nConnection: close\r\n"
    writer.write((head + f"Authorization: Bearer {DEFAULT_KEY}\r\n\r\n").encode())
    await writer.drain()
    return reader, writer


async def test_stall_never_answers_and_closes_when_cleared(
    sim: RunningSimulator, session: aiohttp.ClientSession, ids: tuple[str, str]
) -> None:
    """A stalled request gets no answer; clearing faults closes it, still without an answer."""
    add(sim, kind="stall")
    reader, writer = await raw_get(sim, f"/v1/content/{ids[0]}/progress")
    await until(lambda: len(sim.state.requests()) == 1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await reader.read(1)
    async with session.delete(f"{sim.url}/_sim/faults") as response:
        assert (await response.json())["cleared"] == 1
    async with asyncio.timeout(2):
        assert await reader.read() == b""  # closed without a byte of an answer
    writer.close()
    [record] = sim.state.requests()
    assert (record.fault, record.status, record.bytes) == ("stall", None, None)


async def test_stall_outlasts_a_client_timeout(
    sim: RunningSimulator, session: aiohttp.ClientSession, ids: tuple[str, str]
) -> None:
    """An aiohttp client with a 0.3 s budget times out; the log shows no status."""
    add(sim, kind="stall")
    url = f"{sim.url}/v1/content/{ids[0]}/progress"
    with pytest.raises(TimeoutError):
        async with session.get(url, headers=AUTH, timeout=aiohttp.ClientTimeout(total=0.3)):
            pass
    assert [(r.fault, r.status) for r in sim.state.requests()] == [("stall", None)]


async def test_drip_sends_the_real_answer_one_byte_at_a_time(
    sim: RunningSimulator, session: aiohttp.ClientSession, ids: tuple[str, str]
) -> None:
    """Headers come at once; the real body follows at one byte per 5 ms, Content-Length set."""
    url = f"{sim.url}/v1/content/{ids[0]}/progress"
    async with session.get(url, headers=AUTH) as response:
        real = await response.read()
    add(sim, kind="drip", latency_ms=5, count=1)
    started = time.monotonic()
    async with session.get(url, headers=AUTH) as response:
        headers_after = time.monotonic() - started
        assert response.status == 200
        assert response.headers["Content-Length"] == str(len(real))
        assert response.headers["X-Request-Id"].startswith("req_")
        assert response.headers["X-RateLimit-Remaining"] == "118"
        first = await response.content.read(1)
        dripped = first + await response.read()
    total = time.monotonic() - started
    assert dripped == real
    assert total >= (len(real) - 1) * 0.005
    assert headers_after < total / 4
    # The record is stamped when the handler returns, just after the last byte went out.
    await until(lambda: sim.state.requests()[-1].status is not None)
    record = sim.state.requests()[-1]
    assert (record.fault, record.status, record.bytes) == ("drip", 200, len(real))


async def test_clearing_faults_ends_a_drip_at_once(
    sim: RunningSimulator, session: aiohttp.ClientSession, ids: tuple[str, str]
) -> None:
    """A 1 s-per-byte drip finishes with the whole body right after the faults are cleared."""
    add(sim, kind="drip", latency_ms=1000)
    async with session.get(f"{sim.url}/v1/content/{ids[0]}/progress", headers=AUTH) as response:
        assert await response.content.read(1) == b"{"
        sim.state.clear_faults()
        started = time.monotonic()
        body = json.loads(b"{" + await response.read())
    assert time.monotonic() - started < 2.0
    assert body["containerId"] == ids[0]


async def test_wrong_id_answers_another_terminal_resource(
    sim: RunningSimulator, session: aiohttp.ClientSession, ids: tuple[str, str]
) -> None:
    """wrong_id: a completed body naming a different container or job, even for If-None-Match."""
    cid, job_id = ids
    async with session.get(f"{sim.url}/v1/jobs/{job_id}", headers=AUTH) as response:
        etag = response.headers["ETag"]
    add(sim, kind="wrong_id")
    status, progress = await get_json(session, f"{sim.url}/v1/content/{cid}/progress")
    assert status == 200
    assert progress["containerId"].startswith("cnt_") and progress["containerId"] != cid
    assert (progress["status"], progress["stageProgress"]) == ("completed", 1.0)
    status, job = await get_json(session, f"{sim.url}/v1/jobs/{job_id}", If_None_Match=etag)
    assert status == 200
    assert job["jobId"].startswith("job_") and job["jobId"] != job_id
    assert job["status"] == "completed"
    status, record = await get_json(session, f"{sim.url}/v1/content/{cid}")
    assert (status, record["status"]) == (200, "completed")
    assert record["id"] != cid


async def test_missing_fields_drops_the_id_and_the_progress(
    sim: RunningSimulator, session: aiohttp.ClientSession, ids: tuple[str, str]
) -> None:
    """missing_fields: progress loses containerId, stage, stageProgress; a job loses jobId."""
    cid, job_id = ids
    urls = {
        "progress": f"{sim.url}/v1/content/{cid}/progress",
        "job": f"{sim.url}/v1/jobs/{job_id}",
        "container": f"{sim.url}/v1/content/{cid}",
    }
    real = {kind: (await get_json(session, url))[1] for kind, url in urls.items()}
    add(sim, kind="missing_fields")
    got = {kind: (await get_json(session, url))[1] for kind, url in urls.items()}
    dropped = {kind: set(real[kind]) - set(got[kind]) for kind in urls}
    assert dropped == {
        "progress": {"containerId", "stage", "stageProgress"},
        "job": {"jobId"},
        "container": {"id"},
    }
    assert all(got[k] == {f: v for f, v in real[k].items() if f in got[k]} for k in urls)


async def test_oversize_pads_a_valid_body_to_size_bytes(
    sim: RunningSimulator, session: aiohttp.ClientSession, ids: tuple[str, str]
) -> None:
    """oversize: exactly 200000 bytes by default, or size_bytes; still the real fields."""
    url = f"{sim.url}/v1/content/{ids[0]}/progress"
    _, real = await get_json(session, url)
    async with session.post(f"{sim.url}/_sim/faults", json={"kind": "oversize", "count": 1}) as r:
        assert (await r.json())["fault"]["size_bytes"] == 200_000
    add(sim, kind="oversize", size_bytes=5000, count=1)
    sizes = []
    for _ in range(2):
        async with session.get(url, headers=AUTH) as response:
            raw = await response.read()
            assert response.headers["Content-Length"] == str(len(raw))
        body = json.loads(raw)
        assert {k: v for k, v in body.items() if k != "padding"} == real
        sizes.append(len(raw))
    assert sizes == [200_000, 5000]


async def test_reflect_echoes_the_request_headers(
    sim: RunningSimulator, session: aiohttp.ClientSession, ids: tuple[str, str]
) -> None:
    """reflect: echo holds Authorization; the container record's lastError quotes it."""
    cid, _ = ids
    add(sim, kind="reflect")
    _, progress = await get_json(session, f"{sim.url}/v1/content/{cid}/progress")
    assert progress["echo"]["Authorization"] == f"Bearer {DEFAULT_KEY}"
    assert progress["containerId"] == cid
    _, record = await get_json(session, f"{sim.url}/v1/content/{cid}")
    assert f"Bearer {DEFAULT_KEY}" in record["lastError"]["message"]
    # The simulator's own log still holds only the key id.
    log = json.dumps([r.to_json() for r in sim.state.requests()])
    assert DEFAULT_KEY not in log


async def test_distortions_leave_errors_alone(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    """A distorting fault on an unknown container still answers its 404 envelope."""
    add(sim, kind="reflect", count=1)
    url = f"{sim.url}/v1/content/cnt_0b6f3c2e-1d4a-4e8b-9c7d-5a6b7c8d9e0f/progress"
    status, body = await get_json(session, url)
    assert (status, body["error"]["code"]) == (404, "NOT_FOUND")
    assert "echo" not in body


@pytest.mark.parametrize(
    "kind", ["stall", "drip", "wrong_id", "missing_fields", "oversize", "reflect"]
)
async def test_new_faults_are_logged_with_their_time(
    sim: RunningSimulator,
    session: aiohttp.ClientSession,
    clock: ManualClock,
    ids: tuple[str, str],
    kind: str,
) -> None:
    """Every faulted request is in GET /_sim/requests with the clock's time and the fault."""
    clock.advance(3.25)
    add(sim, kind=kind, count=1, latency_ms=1)
    reader, writer = await raw_get(sim, f"/v1/content/{ids[0]}/progress")
    await until(lambda: len(sim.state.requests()) == 1)
    sim.state.clear_faults()  # releases the stall
    async with asyncio.timeout(5):
        answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200") != (kind == "stall")
    async with session.get(f"{sim.url}/_sim/requests") as response:
        [record] = (await response.json())["requests"]
    assert (record["fault"], record["t_mono"], record["t_wall"]) == (
        kind,
        clock.monotonic(),
        clock.wall(),
    )


async def test_control_api_validates_size_bytes(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    """A negative size_bytes is a 422; unknown fields still are."""
    for rule in ({"kind": "oversize", "size_bytes": -1}, {"kind": "drip", "bytes": 3}):
        async with session.post(f"{sim.url}/_sim/faults", json=rule) as response:
            assert response.status == 422
    assert sim.state.faults.rules == []
