"""Browser-like pollers for the coalescing benchmark, run in worker processes.

Each client polls one container through one replica every 1-2 s (jittered) with
``If-None-Match``, like a tab with a progress bar, and records what it saw and when.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import aiohttp

from bench.sources import updated_at_s


@dataclass(frozen=True)
class PollPlan:
    """What one worker process runs: its clients' URLs and the shared time window."""

    urls: list[tuple[str, str]]  # (container id, full poll URL), one per client
    start_wall: float
    duration_s: float
    interval_s: tuple[float, float] = (1.0, 2.0)
    seed: int = 0


@dataclass
class Seen:
    """One answer a client got: when, what status, its ``Age``, which value it holds after it."""

    container_id: str
    t_wall: float
    status: int
    age_s: int
    updated_s: int | None  # updatedAt of the value the client holds after this answer
    new_value: bool  # a 200 that brought a value the client did not hold


@dataclass
class PollResult:
    """Everything a worker observed."""

    seen: list[Seen] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        """Count one failed request by kind."""
        self.errors[what] = self.errors.get(what, 0) + 1


async def _client(
    session: aiohttp.ClientSession,
    container_id: str,
    url: str,
    plan: PollPlan,
    rng: random.Random,
    out: PollResult,
) -> None:
    lo, hi = plan.interval_s
    end_wall = plan.start_wall + plan.duration_s
    await asyncio.sleep(max(0.0, plan.start_wall - time.time()) + rng.uniform(0, hi))
    etag = ""
    held: int | None = None
    while time.time() < end_wall:
        headers = {"If-None-Match": etag} if etag else {}
        try:
            async with session.get(url, headers=headers) as resp:
                body = await resp.read()
                now = time.time()
                if resp.status in (200, 304):
                    new_value = resp.status == 200
                    if new_value:
                        etag = resp.headers.get("ETag", "")
                        held = updated_at_s(body)
                    age = int(resp.headers.get("Age", "-1"))
                    out.seen.append(Seen(container_id, now, resp.status, age, held, new_value))
                else:
                    out.error(f"http_{resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            out.error(type(exc).__name__)
        await asyncio.sleep(rng.uniform(lo, hi))


async def run_plan(plan: PollPlan) -> PollResult:
    """Run every client of ``plan`` until the window closes."""
    out = PollResult()
    rng = random.Random(plan.seed)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(
            *(
                _client(session, cid, url, plan, random.Random(rng.random()), out)
                for cid, url in plan.urls
            )
        )
    return out


def worker_main(plan: PollPlan, conn: Connection) -> None:
    """Process entry point: run the plan on uvloop and send the result back."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    conn.send(asyncio.run(run_plan(plan)))
    conn.close()
