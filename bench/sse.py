"""Benchmark (issue 3): K SSE subscribers on one proxy worker, against the same K polling.

One proxy process (pinned to CPU 0) with a real Redis; client worker processes (pinned to CPU 1)
hold raw connections. The subscriber count steps up a ladder; at each step the proxy's RSS, its
CPU time and every event's arrival are recorded. At the target K a longer window gives the
headline numbers; then a fresh proxy serves the same K clients polling every 2 s instead.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from bench.procfs import SERVER_CPUS, pin, raise_nofile
from bench.report import Report
from bench.sse_phases import ladder, long_containers, polling, warm
from bench.sse_report import build_report
from bench.stack import running_stack

# File descriptors the proxy needs besides its streams (Redis, upstream, listener, logs).
FD_HEADROOM = 200


@dataclass(frozen=True)
class Params:
    """The knobs of one run."""

    subscribers: int = 10_000
    containers: int = 10
    window_s: float = 20.0
    ladder: tuple[int, ...] = (1_000, 2_000, 5_000, 10_000, 20_000)
    step_window_s: float = 6.0
    procs: int = 4
    poll_interval_s: float = 2.0
    aligned: bool = False
    proxy_gc: tuple[int, ...] | None = None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command-line flags of ``python -m bench sse``."""
    p.add_argument("--subscribers", type=int, default=Params.subscribers, help="target K")
    p.add_argument("--containers", type=int, default=Params.containers, help="M containers")
    p.add_argument("--window", type=float, default=Params.window_s, help="seconds at target K")
    p.add_argument(
        "--ladder",
        default=",".join(str(k) for k in Params.ladder),
        help="subscriber counts to step through (comma-separated)",
    )
    p.add_argument("--procs", type=int, default=Params.procs, help="client processes")
    p.add_argument(
        "--aligned",
        action="store_true",
        help="poll every container in the same instant (worst case) instead of spread over 2 s",
    )
    p.add_argument(
        "--proxy-gc",
        default="",
        metavar="G0,G1,G2",
        help="diagnostic: start the proxy with gc.set_threshold(G0, G1, G2)",
    )
    p.add_argument("--quick", action="store_true", help="K=1000, ladder 500,1000,2000, short")


def params_from(args: argparse.Namespace) -> Params:
    """Flags to parameters."""
    gc = tuple(int(g) for g in args.proxy_gc.split(",")) if args.proxy_gc else None
    if args.quick:
        return Params(
            subscribers=1_000,
            containers=10,
            window_s=8.0,
            ladder=(500, 1_000, 2_000),
            step_window_s=4.0,
            procs=2,
            aligned=args.aligned,
            proxy_gc=gc,
        )
    return Params(
        args.subscribers,
        args.containers,
        args.window,
        tuple(int(k) for k in args.ladder.split(",") if k.strip()),
        procs=args.procs,
        aligned=args.aligned,
        proxy_gc=gc,
    )


def run(p: Params) -> Report:
    """Run the ladder and the polling comparison; build the report."""
    fd_limit = raise_nofile()
    cap = fd_limit - FD_HEADROOM
    with running_stack(replicas=1, gc_threshold=p.proxy_gc) as stack:
        proxy = stack.proxies[0]
        assert proxy.proc is not None
        pin(proxy.proc.pid, SERVER_CPUS)
        containers = long_containers(stack.simulator, p.containers)
        warm(proxy, containers, 0.0 if p.aligned else p.poll_interval_s)
        rss0, steps, stopped = ladder(stack, containers, p, cap)
        poll = polling(stack, containers, p, min(p.subscribers, cap))
    return build_report(p, fd_limit, rss0, steps, poll, stopped)
