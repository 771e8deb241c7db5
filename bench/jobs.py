"""Issue 5: jobs through the proxy with and without upstream ETags, and webhook latency.

Part 1: J jobs (a 12 s queued phase whose body does not change, then 40 s and 5 s stages), one SSE
watcher each, polled through the proxy with ``If-None-Match`` upstream and without. From the
simulator's log: upstream calls and response bytes per job lifetime, against an ideal single
poller following the seed cadence.
Part 2: time from each job's scripted end to its watcher knowing it, with webhooks off, on with
delay 0, and on with delay 60 s (polling wins then).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench.report import Report, median, percentile
from bench.stack import http_json
from proxy.cadence import CadenceRules, poll_interval_s
from proxy.simulator.state import DEFAULT_KEY
from proxy.simulator.timeline import ContainerScript, job_at
from proxy.testing.processes import ManagedProcess, start_proxy, start_redis, start_simulator

STAGES = (("generating_visuals", 40.0), ("finalizing", 5.0))
QUEUED_S = 12.0
WEBHOOK_SECRET = "whsec_benchmark_" + "w" * 32


@dataclass(frozen=True)
class Params:
    jobs: int


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``python -m bench jobs``."""
    p.add_argument("--jobs", type=int, default=20, help="jobs per run")
    p.add_argument("--quick", action="store_true", help="6 jobs")


def params_from(args: argparse.Namespace) -> Params:
    """Parameters from the command line."""
    return Params(6 if args.quick else args.jobs)


def ideal_calls(script: ContainerScript, rules: CadenceRules | None = None) -> int:
    """Polls an ideal single poller makes over a job's life (first poll at its start)."""
    rules = rules or CadenceRules()
    t, count, stage, seen = 0.0, 0, None, 0.0
    while True:
        body = job_at(
            script, t, job_id="job_x", container_id="cnt_x", project_id="prj_x", started_wall=0.0
        )
        count += 1
        if body.get("stage") != stage:
            stage, seen = body.get("stage"), t
        status = "completed" if body["status"] != "running" else "processing"
        interval = poll_interval_s(status, t - seen + 0.001, rules)
        if interval is None:
            return count
        t += interval


def _env(sim_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "LAYERS_API_KEY": DEFAULT_KEY,
        "LAYERS_API_URL": sim_url,
        "REDIS_URL": redis_url,
        "PROXY_AUTH": "none",
        "PROXY_ACCESS_LOG": "off",
        "PROXY_LOG_LEVEL": "warning",
        "LAYERS_RATE_PER_MIN": "1000000",
        **extra,
    }


async def _watch(base: str, jobs: dict[str, float]) -> dict[str, float]:
    """One SSE watcher per job; returns the wall time each learned its terminal state."""
    seen: dict[str, float] = {}

    async def one(session: aiohttp.ClientSession, job: str) -> None:
        async with session.get(f"{base}/v1/jobs/{job}/stream") as resp:
            async for raw in resp.content:
                if raw.startswith(b"data: ") and b'"status":"running"' not in raw:
                    seen[job] = time.time()
                    return

    timeout = aiohttp.ClientTimeout(total=max(jobs.values()) - time.time() + 60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(one(session, j) for j in jobs))
    return seen


def _run_mode(n: int, *, etags: bool, webhook_delay_s: float | None) -> dict[str, Any]:
    redis = start_redis()
    sim = start_simulator(args=["--rate-per-min", "1000000"])
    proxy: ManagedProcess | None = None
    try:
        env = _env(
            sim.url,
            f"redis://127.0.0.1:{redis.port}/0",
            PROXY_UPSTREAM_ETAGS="true" if etags else "false",
            LAYERS_WEBHOOK_SECRET=WEBHOOK_SECRET,
        )
        proxy = start_proxy(env)
        if webhook_delay_s is not None:
            http_json(
                "POST",
                sim.url + "/_sim/webhooks",
                {
                    "url": proxy.url + "/v1/webhooks/layers",
                    "secret": WEBHOOK_SECRET,
                    "delay_s": webhook_delay_s,
                    "drop_rate": 0.0,
                },
            )
        script = ContainerScript(stages=STAGES, queued_s=QUEUED_S)
        lifetime = QUEUED_S + sum(d for _, d in STAGES)
        jobs: dict[str, float] = {}
        rng = random.Random(n)
        for _ in range(n):
            # Staggered starts, so job ends fall at every phase of the 2 s / 5 s poll grid.
            offset = -rng.uniform(0.0, 5.0)
            made = http_json(
                "POST",
                sim.url + "/_sim/containers",
                {
                    "stages": [list(s) for s in STAGES],
                    "queued_s": QUEUED_S,
                    "start_offset_s": offset,
                },
            )
            jobs[made["jobId"]] = time.time() + lifetime + offset  # scripted end (wall clock)
        seen = asyncio.run(_watch(proxy.url, jobs))
        time.sleep(3)  # anything still in flight after the end is counted too
        log = [
            r
            for r in http_json("GET", sim.url + "/_sim/requests?kind=job")["requests"]
            if r["status"] is not None
        ]
    finally:
        for proc in (proxy, sim, redis):
            if proc is not None:
                proc.stop()
    per_job = {j: [r for r in log if r["resource_id"] == j] for j in jobs}
    calls = [len(v) for v in per_job.values()]
    return {
        "etags": etags,
        "webhook_delay_s": webhook_delay_s,
        "calls_per_job": sum(calls) / len(calls),
        "ideal_calls_per_job": ideal_calls(script),
        "not_modified_share": sum(1 for r in log if r["status"] == 304) / max(1, len(log)),
        "bytes_per_job": sum(r["bytes"] or 0 for r in log) / len(jobs),
        "latency_s": sorted(max(0.0, seen[j] - end) for j, end in jobs.items() if j in seen),
        "missed": [j for j in jobs if j not in seen],
    }


def run(p: Params) -> Report:
    """Part 1 (ETags on/off, no webhooks) and part 2 (webhooks off/0 s/60 s)."""
    runs = {
        "etags on": _run_mode(p.jobs, etags=True, webhook_delay_s=None),
        "etags off": _run_mode(p.jobs, etags=False, webhook_delay_s=None),
        "webhooks 0 s": _run_mode(p.jobs, etags=True, webhook_delay_s=0.0),
        "webhooks 60 s": _run_mode(p.jobs, etags=True, webhook_delay_s=60.0),
    }
    return build_report(p, runs)


def build_report(p: Params, runs: dict[str, dict[str, Any]]) -> Report:
    """Calls and bytes per job; end-to-watcher latency per webhook mode."""
    report = Report(
        "jobs",
        "Jobs: upstream ETags and webhooks (issue 5)",
        {"jobs": p.jobs, "queued_s": QUEUED_S, "stages": list(STAGES)},
    )
    on, off = runs["etags on"], runs["etags off"]
    ideal = on["ideal_calls_per_job"]
    for name in ("etags on", "etags off"):
        r = runs[name]
        report.add(
            f"{name}: upstream calls per job (ideal {ideal})",
            f"{r['calls_per_job']:.1f} ({r['calls_per_job'] / ideal:.2f}× ideal)",
            "≤ 1.05× ideal",
            r["calls_per_job"] <= ideal * 1.05,
        )
        report.add(
            f"{name}: response bytes per job",
            f"{r['bytes_per_job']:.0f} ({r['not_modified_share']:.0%} answered 304)",
        )
    report.add(
        "bytes saved by upstream ETags", f"{1 - on['bytes_per_job'] / off['bytes_per_job']:.0%}"
    )
    for name in ("etags on", "webhooks 0 s", "webhooks 60 s"):
        r = runs[name]
        lat = r["latency_s"]
        label = "webhooks off" if name == "etags on" else name
        report.add(
            f"{label}: job end → every watcher knows (p50 / p99 / max)",
            f"{median(lat):.2f} / {percentile(lat, 99):.2f} / {max(lat):.2f} s"
            + (f", {len(r['missed'])} missed" if r["missed"] else ""),
        )
    report.data = {"runs": runs}
    return report
