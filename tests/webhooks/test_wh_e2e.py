"""End to end: simulator, Redis and proxy replicas as real processes; webhooks end polling early.

The proxy polls jobs every 8 s here, so a job that ends 4 s after its first poll would be learned
about ~4 s late by polling alone; the webhook (sent with no delay) must make it well under 1.5 s.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from proxy.testing.processes import ManagedProcess
from tests.conftest import ProxyFactory, Sim

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SECRET = "whsec_e2e_signing_secret_01"
INTERVAL_S = 8.0
JOB_S = 4.0  # the job's only stage; it ends halfway between two scheduled polls
SLOW_WITH_WEBHOOKS = {
    "LAYERS_WEBHOOK_SECRET": SECRET,
    "PROXY_DEFAULT_INTERVAL_S": str(INTERVAL_S),
    "PROXY_SLOW_INTERVAL_S": str(INTERVAL_S),
}


@dataclass
class Run:
    """One scripted job as the test saw it."""

    job_id: str
    end_client_s: float  # time.monotonic() at which the job ends (client side)
    end_sim_s: float  # the simulator's monotonic clock at the job's end (a lower bound)


def start_job(sim: Sim, hook_base: str, drop_rate: float) -> Run:
    """Point the simulator's webhooks at ``hook_base``, then start a job with one 4 s stage."""
    hook = {
        "url": hook_base + "/v1/webhooks/layers",
        "secret": SECRET,
        "delay_s": 0,
        "drop_rate": drop_rate,
    }
    sim.call("POST", "/_sim/webhooks", hook)
    sim_now = sim.call("GET", "/_sim/clock")["mono"]
    started = time.monotonic()
    _, job_id = sim.container([["generating_visuals", JOB_S]])
    return Run(job_id, started + JOB_S, sim_now + JOB_S)


async def watch_until_terminal(url: str) -> tuple[str, float]:
    """Long-poll ``url`` (If-None-Match + Prefer: wait) until the job ends; (status, when)."""
    etag = ""
    async with aiohttp.ClientSession() as session:
        while True:
            headers = {"If-None-Match": etag, "Prefer": "wait=25"} if etag else {}
            async with session.get(url, headers=headers) as response:
                assert response.status in (200, 304), await response.text()
                if response.status == 200:
                    etag = response.headers["ETag"]
                    body = await response.json()
                    if body["status"] != "running":
                        return body["status"], time.monotonic()


async def run_and_watch(
    sim: Sim, watched: ManagedProcess, drop_rate: float, hook_to: ManagedProcess | None = None
) -> tuple[Run, str, float]:
    """Start a job and watch it through ``watched`` to the end; (run, status, latency).

    Webhooks go to ``hook_to``, by default the replica the watcher uses.
    """
    run = start_job(sim, (hook_to or watched).url, drop_rate)
    status, seen_at = await asyncio.wait_for(
        watch_until_terminal(f"{watched.url}/v1/jobs/{run.job_id}"), timeout=INTERVAL_S * 3
    )
    return run, status, seen_at - run.end_client_s


def requests_after_end(sim: Sim, run: Run) -> tuple[list[Any], list[Any]]:
    """All upstream requests for the run's job, and those made after it ended."""
    everything = sim.requests(run.job_id)
    return everything, [r for r in everything if r["t_mono"] > run.end_sim_s]


def last_delivery(sim: Sim) -> tuple[str, int | None]:
    """(outcome, HTTP status) of the simulator's latest job.completed delivery."""
    deliveries = sim.call("GET", "/_sim/webhooks")["deliveries"]
    [*_, last] = [d for d in deliveries if d["type"] == "job.completed"]
    return last["outcome"], last["httpStatus"]


async def test_webhook_tells_the_watcher_well_before_the_next_poll(
    sim: Sim, proxies: ProxyFactory
) -> None:
    """With webhooks on, the watcher learns 'completed' < 1.5 s after the end; polling stops."""
    proxy = proxies(**SLOW_WITH_WEBHOOKS)
    run, status, latency_s = await run_and_watch(sim, proxy, drop_rate=0.0)
    assert status == "completed"
    assert latency_s < 1.5, f"learned {latency_s:.2f}s after the end"
    everything, after = requests_after_end(sim, run)
    # One upstream request after the end: the one the webhook asked for, long before the
    # poll the 8 s cadence had scheduled.
    assert len(after) == 1
    assert after[0]["t_mono"] < everything[0]["t_mono"] + INTERVAL_S - 2
    # Real processes have no clock to inject: wait past the time the scheduled poll would have
    # run, and check that the job's poll loop has stopped.
    await asyncio.sleep(max(0.0, run.end_client_s + INTERVAL_S + 1.0 - time.monotonic()))
    everything_later, after_later = requests_after_end(sim, run)
    assert (len(after_later), len(everything_later)) == (1, len(everything))
    assert last_delivery(sim) == ("sent", 202)


async def test_webhook_to_another_replica_pokes_the_lease_holder(
    sim: Sim, proxies: ProxyFactory
) -> None:
    """Watcher and lease on replica A, webhook delivered to B: still learned < 1.5 s after."""
    a, b = proxies(**SLOW_WITH_WEBHOOKS), proxies(**SLOW_WITH_WEBHOOKS)
    run, status, latency_s = await run_and_watch(sim, a, drop_rate=0.0, hook_to=b)
    assert status == "completed"
    assert latency_s < 1.5, f"learned {latency_s:.2f}s after the end"
    _, after = requests_after_end(sim, run)
    assert len(after) == 1
    assert '"webhook_refresh"' in b.wait_for(f"job:-:{run.job_id}", timeout_s=5)


async def test_lost_webhook_falls_back_to_polling(sim: Sim, proxies: ProxyFactory) -> None:
    """With every webhook dropped, the watcher still learns the end from the next scheduled poll."""
    proxy = proxies(**SLOW_WITH_WEBHOOKS)
    run, status, latency_s = await run_and_watch(sim, proxy, drop_rate=1.0)
    assert status == "completed"
    assert last_delivery(sim) == ("dropped", None)
    # The first poll came right after the start, so the next one is ~4 s after the end.
    assert 2.0 < latency_s < INTERVAL_S, f"learned {latency_s:.2f}s after the end"
    _, after = requests_after_end(sim, run)
    assert len(after) == 1
