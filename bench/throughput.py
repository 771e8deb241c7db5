"""Benchmark (issue 2b): cached-poll throughput of one proxy worker vs a bare aiohttp handler.

Both servers run as single processes pinned to one CPU and get the same wrk load (pinned to the
other CPU), alternately, several rounds; the median of each is compared. Two variants: a plain
200 with the body, and a 304 for ``If-None-Match`` with the current ETag. ``--auth tokens``
runs the proxy in token mode (one tenant, one capability token for both containers); every
request to either server then carries the token, so both parse the same request.

    python -m bench throughput [--auth tokens]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procfs import CLOCK_TICKS, LOAD_CPUS, SERVER_CPUS, cpu_steal_ticks, pin
from bench.report import Report
from bench.stack import Stack, admin_stats, running_stack
from bench.throughput_report import build_report
from bench.wrk import WrkResult, run_wrk, wrk_binary
from proxy.tenancy.tokens import mint_token
from proxy.testing.processes import ManagedProcess, free_port, write_config

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
    auth: str = "none"  # or "tokens"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command-line flags of ``python -m bench throughput``."""
    p.add_argument("--duration", type=float, default=Params.duration_s, help="seconds per run")
    p.add_argument("--rounds", type=int, default=Params.rounds, help="runs per target")
    p.add_argument("--connections", type=int, default=Params.connections, help="wrk -c")
    p.add_argument("--quick", action="store_true", help="2 rounds of 3 s")
    p.add_argument("--auth", choices=("none", "tokens"), default="none", help="the proxy's mode")


def params_from(args: argparse.Namespace) -> Params:
    """Flags to parameters."""
    if args.quick:
        return Params(3.0, 2, args.connections, 1.0, auth=args.auth)
    return Params(args.duration, args.rounds, args.connections, auth=args.auth)


def capture(url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The proxy's answer for ``url``: body (base64) and the headers the bare server repeats."""
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (loopback)
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 (loopback)
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


def warm(stack: Stack, live: str, done: str, auth: dict[str, str]) -> None:
    """Both containers cached by the proxy, the short one completed."""
    proxy = stack.proxies[0].url
    for cid in (live, done):
        capture(f"{proxy}/v1/content/{cid}/progress", auth)
    deadline = time.monotonic() + 20
    while b'"completed"' not in capture(f"{proxy}/v1/content/{done}/progress", auth)["body"]:
        if time.monotonic() > deadline:
            raise RuntimeError("the short container did not complete")
        time.sleep(0.5)


def _token_mode(live: str, done: str) -> tuple[dict[str, str], dict[str, str]]:
    """The proxy's settings for token mode and the request header with a token for both."""
    secret = "bench-" + secrets.token_urlsafe(32)
    config = write_config(
        f'[[tenants]]\nid = "bench"\nsecrets = ["{secret}"]\n'
        "requests_per_second = 1000000\nmax_watched = 100000\n"
    )
    token = mint_token(tenant="bench", secret=secret, containers=[live, done], ttl_s=3600)
    return {"auth": "tokens", "config": str(config)}, {"Authorization": f"Bearer {token}"}


def run(p: Params) -> Report:
    """Run both variants against both servers and build the report."""
    wrk_binary()
    with running_stack(replicas=0) as stack:
        sim = stack.simulator
        live = sim.create([("generating_visuals", 3600.0)]).id
        done = sim.create([("finalizing", 1.0)]).id
        settings, auth = _token_mode(live, done) if p.auth == "tokens" else ({}, {})
        proxy = stack.add_proxy(**settings)
        assert proxy.proc is not None
        pin(proxy.proc.pid, SERVER_CPUS)
        warm(stack, live, done, auth)
        responses = {
            cid: capture(f"{proxy.url}/v1/content/{cid}/progress", auth) for cid in (live, done)
        }
        bare = start_bare(responses)
        try:
            assert bare.proc is not None
            pin(bare.proc.pid, SERVER_CPUS)
            targets = {"bare": bare.url, "proxy": proxy.url}
            etag = responses[done]["headers"]["ETag"]
            variants = {
                "200": (live, {**auth}),
                "304": (done, {**auth, "If-None-Match": etag}),
            }
            results: dict[str, dict[str, list[WrkResult]]] = {}
            checks: dict[str, Any] = {}
            steal0, t0 = cpu_steal_ticks(), time.monotonic()
            for variant, (cid, headers) in variants.items():
                before = admin_stats(proxy.url)
                results[variant] = _alternate(targets, cid, headers, p)
                after = admin_stats(proxy.url)
                checks[variant] = {
                    k: after[k] - before[k]
                    for k in ("client_requests", "not_modified", "fast_answers")
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
            cpus=LOAD_CPUS,
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
                    cpus=LOAD_CPUS,
                )
            )
    return out
