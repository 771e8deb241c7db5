"""Redis Sentinel: two replicas follow a master failover under load without a restart.

Real processes: a master, a replica and three sentinels, the simulator and two proxy replicas
with ``REDIS_URL=redis+sentinel://…``. The master is SIGKILLed while clients poll; what the
clients saw and what reached the simulator are checked afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import aiohttp
import orjson
import pytest

from proxy.simulator.state import DEFAULT_KEY
from proxy.testing.processes import ManagedProcess, start_proxy
from tests.conftest import Sim
from tests.integration.helpers import gaps, wait_until
from tests.redis_topologies import SentinelSet, start_sentinel_set

pytestmark = [pytest.mark.integration]


@pytest.fixture
def sentinels() -> Iterator[SentinelSet]:
    topology = start_sentinel_set()
    yield topology
    topology.stop()


@dataclass
class Seen:
    """What one polling client saw: (monotonic time, status, stageProgress or None)."""

    rows: list[tuple[float, int, float | None]] = field(default_factory=list)


async def _poll(session: aiohttp.ClientSession, url: str, seen: Seen, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                raw = await resp.read()
                progress = None
                if resp.status == 200:
                    progress = float(orjson.loads(raw)["stageProgress"])
                seen.rows.append((time.monotonic(), resp.status, progress))
        except (aiohttp.ClientError, TimeoutError):
            seen.rows.append((time.monotonic(), 0, None))
        await asyncio.sleep(0.3)


@pytest.mark.timeout(120)
async def test_master_failover_under_load(sim: Sim, sentinels: SentinelSet) -> None:
    """0 client 5xx once data was seen, no regression, floor and cadence held, polling resumed
    within 10 s of the election, and cold requests served again on the new master."""
    env = {
        "LAYERS_API_KEY": DEFAULT_KEY,
        "LAYERS_API_URL": sim.url,
        "REDIS_URL": sentinels.url,
        "PROXY_AUTH": "none",
        "PROXY_REDIS_TIMEOUT_S": "0.5",
    }
    replicas: list[ManagedProcess] = []
    try:
        replicas = [start_proxy(env, name=f"proxy{i}") for i in range(2)]
        containers = [sim.container([["generating_visuals", 120.0]])[0] for _ in range(4)]
        stop = asyncio.Event()
        seen: dict[tuple[int, str], Seen] = {}
        async with aiohttp.ClientSession() as session:
            tasks = []
            for i, proxy in enumerate(replicas):
                for cid in containers:
                    seen[(i, cid)] = Seen()
                    url = f"{proxy.url}/v1/content/{cid}/progress"
                    tasks.append(asyncio.create_task(_poll(session, url, seen[(i, cid)], stop)))
            await asyncio.sleep(5)  # history before the fault
            old_port = sentinels.master.port
            killed_at = time.monotonic()
            sentinels.master.kill()
            elected_at = await asyncio.to_thread(sentinels.wait_for_new_master, old_port)
            elected_wall = time.time()  # the simulator logs wall time; compare on that clock
            # History after the election: 12 s of it (the cadence is judged over it), and on
            # until every client has fresh data (under load a client's poll may come late).
            await asyncio.sleep(12)
            await wait_until(
                lambda: all(
                    any(t > elected_at and p is not None for t, _, p in c.rows)
                    for c in seen.values()
                ),
                10,
                0.2,
            )
            cold_id, _ = sim.container([["generating_visuals", 120.0]])
            async with session.get(f"{replicas[0].url}/v1/content/{cold_id}/progress") as resp:
                cold_status = resp.status
            stop.set()
            await asyncio.gather(*tasks)
    finally:
        outputs = [p.all_output() for p in replicas]
        for proxy in replicas:
            proxy.stop()

    assert elected_at - killed_at < 15
    for (i, cid), client in seen.items():
        statuses = [s for _, s, _ in client.rows]
        first_ok = statuses.index(200)
        after_data = statuses[first_ok:]
        assert not [s for s in after_data if s >= 500 or s == 0], (i, cid, statuses)
        progress = [p for _, _, p in client.rows if p is not None]
        assert progress == sorted(progress), (i, cid, progress)  # one stage: never backwards
        fresh_after = [t for t, _, p in client.rows if t > elected_at and p is not None]
        assert fresh_after, (i, cid)
    for cid in containers:
        times = [r["t_wall"] for r in sim.requests(cid) if r["kind"] == "progress"]
        assert min(gaps(times)) >= 0.95, gaps(times)  # the floor, across the failover
        # Polling resumed within 10 s of the election, then kept the 2 s cadence.
        after = [t for t in times if t > elected_wall]
        assert after and after[0] - elected_wall <= 10, (cid, elected_wall, times)
        assert max(gaps(after)) <= 2 + 1.5, gaps(after)
    assert cold_status == 200
    for text in outputs:
        assert "Traceback" not in text
