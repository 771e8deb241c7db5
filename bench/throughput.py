"""Benchmark (issue 2b): cached-poll throughput of one proxy worker vs a bare aiohttp handler.

Both servers run as single processes pinned to one CPU and get the same wrk load (pinned to the
other CPU), alternately, several rounds; the median of each is compared. Two variants: a plain
200 with the body, and a 304 for ``If-None-Match`` with the current ETag.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procfs import CLOCK_TICKS, cpu_steal_ticks, pin
from bench.report import Report, median
from bench.stack import Stack, admin_stats, running_stack
from bench.wrk import WrkResult, run_wrk, wrk_binary
from proxy.testing.processes import ManagedProcess, free_port

SERVER_CPU = {0}
LOAD_CPU = {1}
_KEEP_HEADERS = (
    "ETag",
    "Age",
    "Cache-Status",
    "Cache-Control",
    "X-Request-Id",
    "X-Poll-Interval-Ms",
    "Content-Type",
)


@dataclass(frozen=True)
class Params:
    """The knobs of one run."""

    duration_s: float = 5.0
    rounds: int = 6
    connections: int = 64
    warmup_s: float = 2.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command-line flags of ``python -m bench throughput``."""
    p.add_argument("--duration", type=float, default=Params.duration_s, help="seconds per run")
    p.add_argument("--rounds", type=int, default=Params.rounds, help="runs per target")
    p.add_argument("--connections", type=int, default=Params.connections, help="wrk -c")
    p.add_argument("--quick", action="store_true", help="2 rounds of 3 s")


def params_from(args: argparse.Namespace) -> Params:
    """Flags to parameters."""
    if args.quick:
        return Params(3.0, 2, args.connections, 1.0)
    return Params(args.duration, args.rounds, args.connections)


def capture(url: str) -> dict[str, Any]:
    """The proxy's answer for ``url``: body (base64) and the headers the bare server repeats."""
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 (loopback)
        body = resp.read()
        headers = {k: resp.headers[k] for k in _KEEP_HEADERS if k in resp.headers}
        return {"body_b64": base64.b64encode(body).decode(), "headers": headers, "body": body}


def start_bare(responses: dict[str, dict[str, Any]]) -> ManagedProcess:
    """Start ``bench/bare_server.py`` with the captured responses."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(
            {k: {kk: vv for kk, vv in v.items() if kk != "body"} for k, v in responses.items()}, fh
        )
    port = free_port()
    argv = [sys.executable, "-m", "bench.bare_server", "--port", str(port), "--responses", fh.name]
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    return ManagedProcess("bare", argv, env, port).start("bare server listening on")


def warm(stack: Stack) -> tuple[str, str]:
    """An in-flight container and a completed one, both cached by the proxy."""
    sim = stack.simulator
    live = sim.create([("generating_visuals", 3600.0)])
    done = sim.create([("finalizing", 1.0)])
    proxy = stack.proxies[0].url
    for cid in (live.id, done.id):
        capture(f"{proxy}/v1/content/{cid}/progress")
    deadline = time.monotonic() + 20
    while b'"completed"' not in capture(f"{proxy}/v1/content/{done.id}/progress")["body"]:
        if time.monotonic() > deadline:
            raise RuntimeError("the short container did not complete")
        time.sleep(0.5)
    return live.id, done.id


def run(p: Params) -> Report:
    """Run both variants against both servers and build the report."""
    wrk_binary()
    with running_stack(replicas=1) as stack:
        proxy = stack.proxies[0]
        assert proxy.proc is not None
        pin(proxy.proc.pid, SERVER_CPU)
        live, done = warm(stack)
        responses = {cid: capture(f"{proxy.url}/v1/content/{cid}/progress") for cid in (live, done)}
        bare = start_bare(responses)
        try:
            assert bare.proc is not None
            pin(bare.proc.pid, SERVER_CPU)
            targets = {"bare": bare.url, "proxy": proxy.url}
            etag = responses[done]["headers"]["ETag"]
            variants = {
                "200": (live, {}),
                "304": (done, {"If-None-Match": etag}),
            }
            results: dict[str, dict[str, list[WrkResult]]] = {}
            checks: dict[str, Any] = {}
            steal0, t0 = cpu_steal_ticks(), time.monotonic()
            for variant, (cid, headers) in variants.items():
                before = admin_stats(proxy.url)
                results[variant] = _alternate(targets, cid, headers, p)
                after = admin_stats(proxy.url)
                checks[variant] = {
                    k: after[k] - before[k] for k in ("client_requests", "not_modified")
                }
            elapsed = time.monotonic() - t0
            ticks = elapsed * CLOCK_TICKS * len(os.sched_getaffinity(0))
            checks["steal"] = (cpu_steal_ticks() - steal0) / ticks
        finally:
            bare.stop()
    return build_report(p, results, checks)


def _alternate(
    targets: dict[str, str], cid: str, headers: dict[str, str], p: Params
) -> dict[str, list[WrkResult]]:
    out: dict[str, list[WrkResult]] = {name: [] for name in targets}
    path = f"/v1/content/{cid}/progress"
    for base in targets.values():
        run_wrk(
            base + path,
            duration_s=p.warmup_s,
            connections=p.connections,
            headers=headers,
            cpus=LOAD_CPU,
        )
    order = list(targets)
    for r in range(p.rounds):
        for name in order if r % 2 == 0 else reversed(order):
            out[name].append(
                run_wrk(
                    targets[name] + path,
                    duration_s=p.duration_s,
                    connections=p.connections,
                    headers=headers,
                    cpus=LOAD_CPU,
                )
            )
    return out


def _spread(mid: float, runs: list[WrkResult]) -> str:
    rps = [r.rps for r in runs]
    return f"{mid:,.0f} ({min(rps):,.0f}-{max(rps):,.0f})"


def build_report(
    p: Params, results: dict[str, dict[str, list[WrkResult]]], checks: dict[str, Any]
) -> Report:
    """Medians, ratios and the sanity checks (every answer a 200 or a 304 as intended)."""
    report = Report(
        "throughput",
        "Throughput: one proxy worker vs a bare aiohttp handler (same bytes, same headers)",
        {
            "load": f"wrk -t1 -c{p.connections} -d{p.duration_s:g}s",
            "rounds": p.rounds,
            "servers_on_cpu": sorted(SERVER_CPU),
            "wrk_on_cpu": sorted(LOAD_CPU),
        },
    )
    data: dict[str, Any] = {}
    for variant, by_target in results.items():
        bare_runs, proxy_runs = by_target["bare"], by_target["proxy"]
        bare = median([r.rps for r in bare_runs])
        proxy = median([r.rps for r in proxy_runs])
        # Each round ran both servers back to back: their ratio is robust to the machine's
        # slower and faster minutes, so its median is the headline.
        ratio = median(
            [q.rps / max(b.rps, 1.0) for b, q in zip(bare_runs, proxy_runs, strict=True)]
        )
        bad = sum(r.bad_status + r.socket_errors for runs in by_target.values() for r in runs)
        label = "200 (body)" if variant == "200" else "304 (If-None-Match)"
        report.add(f"{label}: bare aiohttp req/s (min-max)", _spread(bare, bare_runs))
        report.add(f"{label}: proxy req/s (min-max)", _spread(proxy, proxy_runs))
        report.add(f"{label}: proxy / bare, per round", f"{ratio:.2f}", ">= 0.8", ratio >= 0.8)
        report.add(
            f"{label}: p99 latency bare / proxy",
            f"{median([r.p99_ms for r in bare_runs]):.2f} / "
            f"{median([r.p99_ms for r in proxy_runs]):.2f} ms",
        )
        report.add(f"{label}: errors or unexpected statuses", str(bad), "0", bad == 0)
        data[variant] = {
            "bare_rps": bare,
            "proxy_rps": proxy,
            "ratio_of_medians": proxy / bare,
            "median_round_ratio": ratio,
            "runs": {t: [r.__dict__ for r in runs] for t, runs in by_target.items()},
            "proxy_counters": checks[variant],
        }
    nm = checks["304"]
    report.add(
        "304 variant: proxy answers that were 304",
        f"{nm['not_modified']:,} of {nm['client_requests']:,}",
    )
    report.add("CPU steal during the runs", f"{checks['steal']:.1%}")
    data["cpu_steal"] = checks["steal"]
    report.data = data
    return report
