"""SSE streams and long-poll across replicas."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from tests.conftest import ProxyFactory, Sim

pytestmark = [pytest.mark.integration]


async def read_events(resp: aiohttp.ClientResponse, limit_s: float) -> list[dict[str, Any]]:
    """Parse SSE events until the server closes the stream (or the limit passes)."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async with asyncio.timeout(limit_s):
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if not line:
                if current:
                    current["at"] = time.monotonic()
                    events.append(current)
                current = {}
            elif line.startswith(":"):
                current.setdefault("comments", 0)
                events.append({"comment": line, "at": time.monotonic()})
            else:
                name, _, value = line.partition(": ")
                current[name] = json.loads(value) if name == "data" else value
    return events


@pytest.mark.timeout(60)
async def test_stream_on_one_replica_sees_every_snapshot_polled_by_another(
    sim: Sim, proxies: ProxyFactory
) -> None:
    """Events in version order to the terminal one; then the stream ends; reconnect gets 204."""
    a, b = proxies(), proxies()
    cid, _ = sim.container([["generating_visuals", 4.0], ["finalizing", 3.0]])
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{a.url}/v1/content/{cid}/progress") as resp:
            assert resp.status == 200  # replica a polls
        async with session.get(f"{b.url}/v1/content/{cid}/progress/stream") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            events = [e for e in await read_events(resp, 20) if "data" in e]
        versions = [int(e["id"]) for e in events]
        assert versions == sorted(versions) and len(set(versions)) == len(versions)
        assert events[-1]["data"]["status"] == "completed"
        assert all(e["event"] == "progress" for e in events)
        stages = [e["data"]["stage"] for e in events]
        assert stages.index("finalizing") > 0  # it saw the stage change live
        # Every upstream answer that changed the body reached the stream.
        assert len(events) >= len(sim.requests(cid)) - 1
        last = events[-1]["id"]
        async with session.get(
            f"{a.url}/v1/content/{cid}/progress/stream", headers={"Last-Event-ID": last}
        ) as resp:
            assert resp.status == 204
        async with session.get(
            f"{a.url}/v1/content/{cid}/progress/stream", headers={"Last-Event-ID": "1"}
        ) as resp:
            replay = [e for e in await read_events(resp, 5) if "data" in e]
        assert len(replay) == 1 and replay[0]["data"]["status"] == "completed"


@pytest.mark.timeout(60)
async def test_multiplexed_stream_covers_containers_and_jobs(
    sim: Sim, proxies: ProxyFactory
) -> None:
    """One stream for several containers and a job ends when all are terminal."""
    a, b = proxies(), proxies()
    c1, j1 = sim.container([["generating_visuals", 3.0]])
    c2, _ = sim.container([["analyzing", 2.0], ["opening_pr", 2.0]], ending="canceled")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{a.url}/v1/content/{c1}/progress") as resp:
            assert resp.status == 200
        url = f"{b.url}/v1/stream?containers={c1},{c2}&jobs={j1}"
        async with session.get(url) as resp:
            assert resp.status == 200
            events = [e for e in await read_events(resp, 25) if "data" in e]
    finals: dict[str, str] = {}
    for e in events:
        name = e["data"].get("containerId") or e["data"].get("jobId")
        finals[name] = e["data"]["status"]
        assert e["event"] in ("progress", "job")
    assert finals == {c1: "completed", c2: "canceled", j1: "completed"}


@pytest.mark.timeout(40)
async def test_long_poll_returns_on_change_or_304_after_the_wait(
    sim: Sim, proxies: ProxyFactory
) -> None:
    """If-None-Match + Prefer: wait=N holds until the next snapshot, else 304 after N s."""
    a, b = proxies(), proxies()
    cid, _ = sim.container([["generating_visuals", 30.0]])
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{a.url}/v1/content/{cid}/progress") as resp:
            etag = resp.headers["ETag"]
        started = time.monotonic()
        async with session.get(
            f"{b.url}/v1/content/{cid}/progress",
            headers={"If-None-Match": etag, "Prefer": "wait=10"},
        ) as resp:
            waited = time.monotonic() - started
            assert resp.status == 200
            assert resp.headers["ETag"] != etag
            assert resp.headers["Preference-Applied"] == "wait=10"
        assert waited <= 3.5  # the next poll comes within the 2 s cadence
        started = time.monotonic()
        async with session.get(
            f"{b.url}/v1/content/{cid}/progress",
            headers={"If-None-Match": resp.headers["ETag"], "Prefer": "wait=1"},
        ) as resp2:
            waited = time.monotonic() - started
        assert resp2.status in (200, 304)
        if resp2.status == 304:
            assert 0.9 <= waited <= 1.8


async def read_lines(resp: aiohttp.ClientResponse, for_s: float) -> list[str]:
    """Every line the stream sends within ``for_s`` seconds."""
    lines: list[str] = []
    try:
        async with asyncio.timeout(for_s):
            async for raw in resp.content:
                lines.append(raw.decode().rstrip("\n"))
    except TimeoutError:
        pass
    return lines


@pytest.mark.timeout(40)
async def test_idle_stream_heartbeats_and_releases_interest_on_close(
    sim: Sim, proxies: ProxyFactory
) -> None:
    """Comment heartbeats while idle; after the client leaves, polling stops within the linger."""
    proxy = proxies(PROXY_SSE_HEARTBEAT_S="1", PROXY_LINGER_S="3")
    cid, _ = sim.container([["generating_visuals", 120.0]])
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{proxy.url}/v1/content/{cid}/progress") as resp:
            assert resp.status == 200
        # Freeze upstream answers for it: no new versions, so only heartbeats flow.
        sim.fault(kind="status", status=503, path_contains=cid)
        async with session.get(f"{proxy.url}/v1/content/{cid}/progress/stream") as resp:
            lines = await read_lines(resp, 4.5)
    closed_at = time.monotonic()
    assert sum(1 for line in lines if line.startswith(": hb")) >= 3, lines
    # A window anchored to the close: past the 3 s linger no upstream request may come.
    await asyncio.sleep(8)
    times = [r["t_mono"] for r in sim.requests(cid)]
    assert len(times) >= 3  # the open stream kept it polled
    assert times[-1] <= closed_at + 3.0 + 0.5, (times, closed_at)


@pytest.mark.timeout(40)
async def test_stream_survives_a_failing_first_fetch(sim: Sim, proxies: ProxyFactory) -> None:
    """Upstream 5xx on connect: an error event, then data once the upstream heals."""
    proxy = proxies()
    cid, _ = sim.container([["generating_visuals", 60.0]])
    sim.fault(kind="status", status=503, path_contains=cid, count=1)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{proxy.url}/v1/content/{cid}/progress/stream") as resp,
    ):
        assert resp.status == 200
        lines = await read_lines(resp, 4)
    assert "event: error" in lines
    assert "event: progress" in lines
    assert lines.index("event: error") < lines.index("event: progress")


@pytest.mark.timeout(60)
async def test_a_client_that_stops_reading_is_dropped(sim: Sim, proxies: ProxyFactory) -> None:
    """A stream whose reader stalls is closed after the write timeout; interest is released."""
    proxy = proxies(
        PROXY_SSE_WRITE_TIMEOUT_S="2",
        LAYERS_RATE_PER_MIN="1000000",
        PROXY_ADMIN_TOKEN="admin-token-for-tests-0123456789",
    )
    cids = [sim.container([["generating_visuals", 120.0]])[0] for _ in range(100)]
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port, limit=1024)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 4096)
    path = "/v1/stream?containers=" + ",".join(cids)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    await reader.readline()  # the status line arrives; then we never read again

    async def streams_open() -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{proxy.url}/admin/stats",
                headers={"Authorization": "Bearer admin-token-for-tests-0123456789"},
            ) as resp,
        ):
            return int((await resp.json())["streams_open"])

    assert await streams_open() == 1
    dropped = False
    for _ in range(80):
        await asyncio.sleep(0.5)
        if await streams_open() == 0:
            dropped = True
            break
    writer.close()
    assert dropped, "the stalled stream was never dropped"
