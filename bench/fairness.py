"""Issue 4: the shared upstream budget under contention, and the cost of token checks.

Three tenants with unequal weights share one key budgeted at 120/min (90% share) on two replicas.
Every container has a poller through the proxy with its tenant's token. From the simulator's
request log (what "Layers" saw) in the steady window: calls per minute against the budget, each
tenant's share against its max-min fair share (computed by ``proxy.fair_share`` from the same
demand), and the longest time any watched container went unpolled. Then cached-poll throughput of
one worker with tokens against open mode, same wrk load, same run.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench.report import Report, median
from bench.stack import ADMIN_TOKEN, http_json
from bench.wrk import run_wrk, wrk_binary
from proxy.fair_share import Demand, allocate
from proxy.simulator.state import DEFAULT_KEY
from proxy.tenancy.tokens import mint_token
from proxy.testing.processes import (
    ManagedProcess,
    start_proxy,
    start_redis,
    start_simulator,
    write_config,
)

TENANTS = (("alpha", 1.0, 0.6), ("beta", 2.0, 0.3), ("gamma", 3.0, 0.1))  # id, weight, share
SECRET = "fairness-benchmark-secret-{}-" + "z" * 40


@dataclass(frozen=True)
class Params:
    sizes: tuple[int, ...]
    rate_per_min: int
    warmup_s: float
    window_s: float
    wrk_s: float


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``python -m bench fairness``."""
    p.add_argument("--sizes", default="10,50,200", help="watched containers per scenario")
    p.add_argument("--rate-per-min", type=int, default=120, help="LAYERS_RATE_PER_MIN")
    p.add_argument("--warmup", type=float, default=0, help="seconds before measuring (0: auto)")
    p.add_argument("--window", type=float, default=120, help="measured seconds per scenario")
    p.add_argument("--wrk-seconds", type=float, default=8, help="seconds per wrk run")
    p.add_argument("--quick", action="store_true", help="10 and 50 containers, short windows")


def params_from(args: argparse.Namespace) -> Params:
    """Parameters from the command line."""
    if args.quick:
        return Params((10, 50), args.rate_per_min, 0, 45, 4)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    return Params(sizes, args.rate_per_min, args.warmup, args.window, args.wrk_seconds)


def _config() -> str:
    out = []
    for tenant, weight, _ in TENANTS:
        out.append(
            f'[[tenants]]\nid = "{tenant}"\nsecrets = ["{SECRET.format(tenant)}"]\n'
            f"weight = {weight}\nrequests_per_second = 100000\nmax_watched = 100000\n"
        )
    return "\n".join(out)


def _split(n: int) -> dict[str, int]:
    counts = {t: max(1, round(n * share)) for t, _, share in TENANTS}
    counts["alpha"] += n - sum(counts.values())
    return counts


async def _pollers(urls: list[tuple[str, str]], until: float) -> int:
    """One poller per (url, token) every 2 s until ``until``; returns requests made."""
    made = 0

    async def one(url: str, token: str, offset: float) -> None:
        nonlocal made
        await asyncio.sleep(offset)
        etag = ""
        while time.monotonic() < until:
            headers = {"Authorization": f"Bearer {token}"}
            if etag:
                headers["If-None-Match"] = etag
            async with session.get(url, headers=headers) as resp:
                await resp.read()
                etag = resp.headers.get("ETag", etag)
                made += 1
            await asyncio.sleep(2.0)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(one(url, tok, i % 20 / 10) for i, (url, tok) in enumerate(urls)))
    return made


def _scenario(
    n: int, p: Params, sim: ManagedProcess, proxies: list[ManagedProcess]
) -> dict[str, Any]:
    counts = _split(n)
    containers: dict[str, list[str]] = {}
    for tenant, count in counts.items():
        containers[tenant] = [
            http_json(
                "POST",
                sim.url + "/_sim/containers",
                {"stages": [["generating_visuals", 3600.0]], "queued_s": 0, "with_job": False},
            )["containerId"]
            for _ in range(count)
        ]
    urls = []
    for tenant, cids in containers.items():
        token = mint_token(tenant=tenant, secret=SECRET.format(tenant), containers=cids, ttl_s=3600)
        for i, cid in enumerate(cids):
            urls.append((f"{proxies[i % len(proxies)].url}/v1/content/{cid}/progress", token))
    budget_per_min = p.rate_per_min * 0.9
    # Long enough for every container to be fetched once (cold fetches queue behind the budget)
    # and for the proxy to see each stage last over 30 s, so demand is at the 5 s cadence the
    # fair share below assumes (when every tenant is saturated, the cadence does not matter).
    warmup = p.warmup_s or max(40.0, n / (budget_per_min / 60) * 1.1)
    start = time.monotonic()
    window_start = start + warmup
    until = window_start + p.window_s
    asyncio.run(_pollers(urls, until))
    log = [
        r
        for r in http_json("GET", sim.url + "/_sim/requests?kind=progress")["requests"]
        if r["status"] is not None
        and r["resource_id"] in {c for cids in containers.values() for c in cids}
    ]
    window = [r for r in log if window_start <= r["t_mono"] <= until]
    owner = {c: t for t, cids in containers.items() for c in cids}
    per_tenant = {t: sum(1 for r in window if owner[r["resource_id"]] == t) for t in containers}
    # The fair share of the same demand: every container wants its cadence (5 s: stage > 30 s).
    demands = [Demand(t, c, 5.0) for t, cids in containers.items() for c in cids]
    weights = {t: w for t, w, _ in TENANTS}
    fair = allocate(demands, weights, budget_per_min / 60 * 0.95)
    fair_total = sum(fair.tenant_rate.values())
    longest = 0.0
    longest_by_tenant = dict.fromkeys(containers, 0.0)
    for cid in owner:
        times = sorted(r["t_mono"] for r in log if r["resource_id"] == cid)
        points = [window_start, *[t for t in times if window_start < t < until], until]
        before = [t for t in times if t <= window_start]
        if before:
            points[0] = before[-1]
        wait = max(b - a for a, b in itertools.pairwise(points))
        longest = max(longest, wait)
        longest_by_tenant[owner[cid]] = max(longest_by_tenant[owner[cid]], wait)
    calls_per_min = len(window) / (p.window_s / 60)
    demand_per_min = sum(60 / 5.0 for _ in owner)
    return {
        "containers": n,
        "split": counts,
        "calls_per_min": calls_per_min,
        "budget_per_min": budget_per_min,
        "demand_per_min": demand_per_min,
        "utilisation": calls_per_min / budget_per_min,
        "share": {t: per_tenant[t] / max(1, len(window)) for t in containers},
        "fair_share": {t: fair.tenant_rate.get(t, 0) / fair_total for t in containers},
        "longest_wait_s": longest,
        "longest_wait_by_tenant_s": longest_by_tenant,
        "fair_interval_s": {t: round(counts[t] / fair.tenant_rate[t], 1) for t in containers},
        "max_calls_in_any_60s": _max_in_window([r["t_mono"] for r in log], 60.0),
    }


def _max_in_window(times: list[float], span: float) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] < t - span:
            j += 1
        best = max(best, i - j + 1)
    return best


def _token_cost(p: Params, sim: ManagedProcess, redis_url: str, config: str) -> dict[str, Any]:
    """Cached-poll req/s of one worker: tokens on vs open mode (same container, same wrk)."""
    cid = http_json(
        "POST",
        sim.url + "/_sim/containers",
        {"stages": [["generating_visuals", 3600.0]], "queued_s": 0, "with_job": False},
    )["containerId"]
    token = mint_token(tenant="gamma", secret=SECRET.format("gamma"), containers=[cid], ttl_s=3600)
    results: dict[str, list[float]] = {"open": [], "tokens": []}
    bad = 0
    procs = {
        mode: start_proxy(
            _env(sim.url, redis_url, config, auth=mode, unlimited=True), name=f"proxy-{mode}"
        )
        for mode in ("none", "tokens")
    }
    try:
        urls = {mode: f"{proc.url}/v1/content/{cid}/progress" for mode, proc in procs.items()}
        headers = {"none": {}, "tokens": {"Authorization": f"Bearer {token}"}}
        for mode in procs:  # warm: cold fetch + JIT-less caches
            run_wrk(urls[mode], duration_s=2, connections=32, headers=headers[mode])
        for r in range(3):
            for mode in ("none", "tokens") if r % 2 == 0 else ("tokens", "none"):
                res = run_wrk(urls[mode], duration_s=p.wrk_s, connections=64, headers=headers[mode])
                results["open" if mode == "none" else "tokens"].append(res.rps)
                bad += res.bad_status + res.socket_errors
    finally:
        for proc in procs.values():
            proc.stop()
    return {
        "open_rps": median(results["open"]),
        "tokens_rps": median(results["tokens"]),
        "ratio": median(results["tokens"]) / median(results["open"]),
        "bad_responses": bad,
        "runs": results,
    }


def _env(
    sim_url: str,
    redis_url: str,
    config: str,
    *,
    auth: str,
    unlimited: bool = False,
    rate: int = 120,
) -> dict[str, str]:
    return {
        "LAYERS_API_KEY": DEFAULT_KEY,
        "LAYERS_API_URL": sim_url,
        "REDIS_URL": redis_url,
        "PROXY_AUTH": auth,
        "PROXY_CONFIG": config,
        "PROXY_ADMIN_TOKEN": ADMIN_TOKEN,
        "PROXY_ACCESS_LOG": "off",
        "PROXY_LOG_LEVEL": "warning",
        "LAYERS_RATE_PER_MIN": str(1_000_000 if unlimited else rate),
    }


def run(p: Params) -> Report:
    """Every scenario on a fresh stack, then the token-cost comparison."""
    wrk_binary()
    config = str(write_config(_config()))
    scenarios = []
    for n in p.sizes:
        redis = start_redis()
        sim = start_simulator(args=["--rate-per-min", "1000000"])
        proxies: list[ManagedProcess] = []
        try:
            redis_url = f"redis://127.0.0.1:{redis.port}/0"
            proxies = [
                start_proxy(
                    _env(sim.url, redis_url, config, auth="tokens", rate=p.rate_per_min),
                    name=f"proxy-{i}",
                )
                for i in range(2)
            ]
            scenarios.append(_scenario(n, p, sim, proxies))
        finally:
            for proc in [*proxies, sim, redis]:
                proc.stop()
    redis = start_redis()
    sim = start_simulator(args=["--rate-per-min", "1000000"])
    try:
        cost = _token_cost(p, sim, f"redis://127.0.0.1:{redis.port}/0", config)
    finally:
        sim.stop()
        redis.stop()
    return build_report(p, scenarios, cost)


def build_report(p: Params, scenarios: list[dict[str, Any]], cost: dict[str, Any]) -> Report:
    """The table: per scenario, budget use and fairness; then token cost."""
    report = Report(
        "fairness",
        "Fair share of one key's budget across tenants (issue 4)",
        {
            "rate_per_min": p.rate_per_min,
            "budget_share": 0.9,
            "replicas": 2,
            "window_s": p.window_s,
            "tenants": "alpha w1 60%, beta w2 30%, gamma w3 10%",
        },
    )
    for s in scenarios:
        n = s["containers"]
        report.add(
            f"{n} containers: upstream calls/min (budget {s['budget_per_min']:g})",
            f"{s['calls_per_min']:.1f}",
            f"≤ {s['budget_per_min']:g}",
            s["calls_per_min"] <= s["budget_per_min"] * 1.02,
        )
        report.add(
            f"{n} containers: most calls in any 60 s (tier 120)",
            str(s["max_calls_in_any_60s"]),
            f"≤ {p.rate_per_min}",
            s["max_calls_in_any_60s"] <= p.rate_per_min,
        )
        if s["demand_per_min"] > s["budget_per_min"]:
            report.add(
                f"{n} containers: budget used (demand {s['demand_per_min']:g}/min)",
                f"{s['utilisation']:.0%}",
                "≥ 90%",
                s["utilisation"] >= 0.9,
            )
        worst = max(
            abs(s["share"][t] - s["fair_share"][t]) / s["fair_share"][t] for t in s["share"]
        )
        shares = ", ".join(
            f"{t} {s['share'][t]:.0%} (fair {s['fair_share'][t]:.0%})" for t in s["share"]
        )
        report.add(f"{n} containers: tenant shares", shares, "within ±10% of fair", worst <= 0.10)
        report.add(
            f"{n} containers: longest unpolled interval per tenant",
            ", ".join(f"{t} {v:.1f} s" for t, v in s["longest_wait_by_tenant_s"].items()),
            "fair interval: " + ", ".join(f"{t} {v:g} s" for t, v in s["fair_interval_s"].items()),
        )
    report.add(
        "cached polls with tokens / open mode",
        f"{cost['ratio']:.2f} ({cost['tokens_rps']:.0f} / {cost['open_rps']:.0f} req/s)",
        "≥ 0.85, no errors",
        cost["ratio"] >= 0.85 and cost["bad_responses"] == 0,
    )
    report.data = {"scenarios": scenarios, "token_cost": cost}
    return report
