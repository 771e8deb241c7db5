"""Benchmark (issue 11): memory per idle SSE stream, the proxy against a bare aiohttp handler.

One run starts Redis, the simulator and one proxy replica (open mode), plus
``bench/bare_server.py``, whose ``/progress/stream`` route is the least an aiohttp SSE handler
can do: the same stream headers, the container's body as one event, then an idle wait. Client
worker processes (pinned away from the servers) open K streams over 10 in-flight containers to
one server, wait for every first event, let the server settle and read its RSS; the streams then
close and the same K go to the other server. Each server is measured from a fresh process and
its RSS before the streams open, so what is left over from one round never counts in the next.

    python -m bench stream_memory --streams 5000 --rounds 2

The per-stream figure is (RSS with K streams - RSS before) / K; the ratio is proxy / bare, per
round and for the median of the rounds.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from bench.client_pool import Pool
from bench.procfs import SERVER_CPUS, pin, raise_nofile, rss_kb
from bench.report import Report, median
from bench.sse_phases import _share, _specs, long_containers, warm
from bench.stack import Container, Stack, running_stack
from bench.throughput import capture, start_bare
from proxy.testing.processes import ManagedProcess

# Issue 11: an idle stream costs at most this much more than a bare aiohttp SSE handler's.
RATIO_TARGET = 1.05
_KB_PER_KIB = 1.024
_SETTLE_S = 3.0  # after the last first event: heartbeats, interest flushes, allocator


@dataclass(frozen=True)
class Params:
    """The knobs of one run."""

    streams: int = 5000
    rounds: int = 2
    containers: int = 10
    procs: int = 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    """This benchmark's options."""
    p.add_argument("--streams", type=int, default=Params.streams, help="K idle streams per server")
    p.add_argument("--rounds", type=int, default=Params.rounds, help="bare/proxy pairs")
    p.add_argument("--procs", type=int, default=Params.procs, help="client worker processes")
    p.add_argument("--quick", action="store_true", help="1,000 streams, one round (CI smoke)")


def params_from(args: argparse.Namespace) -> Params:
    """Params from parsed options."""
    if args.quick:
        return Params(streams=1000, rounds=1, procs=args.procs)
    return Params(streams=args.streams, rounds=args.rounds, procs=args.procs)


def _per_stream_kb(server: ManagedProcess, containers: list[Container], p: Params) -> float:
    """Open ``p.streams`` idle streams to ``server``; KB of its RSS each, then close them."""
    assert server.proc is not None
    pid = server.proc.pid
    pin(pid, SERVER_CPUS)
    pool = Pool(_specs(server, containers, p.streams, p.procs, "/stream"))
    try:
        pool.call("collect")  # returns once every worker runs
        time.sleep(1.0)
        before = rss_kb(pid)
        replies = pool.call_each("open_streams", [[n] for n in _share(p.streams, p.procs)])
        opened = sum(r["open"] for r in replies)
        if opened != p.streams:
            raise RuntimeError(f"{server.name}: {opened} of {p.streams} streams opened")
        time.sleep(_SETTLE_S)
        after = rss_kb(pid)
        pool.call("close")
    finally:
        pool.close()
    return (after - before) * _KB_PER_KIB / p.streams


def _round(stack: Stack, containers: list[Container], p: Params) -> dict[str, float]:
    """One fresh bare server and one fresh proxy replica, K streams each."""
    old = stack.proxies[0]
    responses = {c.id: capture(f"{old.url}/v1/content/{c.id}/progress") for c in containers}
    bare = start_bare(responses)
    try:
        bare_kb = _per_stream_kb(bare, containers, p)
    finally:
        bare.stop()
    stack.stop_proxy(old)
    proxy = stack.add_proxy()
    warm(proxy, containers)
    proxy_kb = _per_stream_kb(proxy, containers, p)
    print(
        f"  stream_memory: bare {bare_kb:.2f} KB, proxy {proxy_kb:.2f} KB per stream "
        f"({proxy_kb / bare_kb:.3f})",
        flush=True,
    )
    return {"bare_kb": bare_kb, "proxy_kb": proxy_kb, "ratio": proxy_kb / bare_kb}


def run(p: Params) -> Report:
    """Alternate bare and proxy ``p.rounds`` times and build the report."""
    fd_limit = raise_nofile()
    if p.streams + 1000 > fd_limit:
        raise SystemExit(f"--streams {p.streams} needs an open-files limit above {fd_limit}")
    rounds: list[dict[str, float]] = []
    with running_stack(replicas=1) as stack:
        containers = long_containers(stack.simulator, p.containers)
        warm(stack.proxies[0], containers)
        for _ in range(p.rounds):
            rounds.append(_round(stack, containers, p))
    bare = median([r["bare_kb"] for r in rounds])
    proxy = median([r["proxy_kb"] for r in rounds])
    ratio = proxy / bare
    report = Report(
        "stream_memory",
        "Idle SSE stream memory: the proxy against a bare aiohttp SSE handler, same run",
        {"streams": p.streams, "rounds": p.rounds, "containers": p.containers, "procs": p.procs},
    )
    report.add("bare aiohttp SSE handler, RSS per idle stream", f"{bare:.2f} KB")
    report.add("proxy (open mode), RSS per idle stream", f"{proxy:.2f} KB")
    report.add(
        "proxy / bare", f"{ratio:.3f}", f"<= {RATIO_TARGET:.2f}", ratio <= RATIO_TARGET + 1e-9
    )
    report.add_table(
        "Rounds (each server a fresh process)",
        ["round", "bare KB", "proxy KB", "ratio"],
        [
            [str(i + 1), f"{r['bare_kb']:.2f}", f"{r['proxy_kb']:.2f}", f"{r['ratio']:.3f}"]
            for i, r in enumerate(rounds)
        ],
    )
    report.data = {"rounds": rounds, "bare_kb": bare, "proxy_kb": proxy, "ratio": ratio}
    return report
