"""Benchmark (issue 2a): N polling clients x M containers through 2 replicas sharing a Redis.

Measures what reached "Layers" (the simulator's request log) against the ideal cadence schedule,
the 1 s floor per container, and how stale the clients' data was.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import time
from dataclasses import dataclass

from bench.coalescing_report import build_report
from bench.poll_clients import PollPlan, PollResult, worker_main
from bench.procfs import raise_nofile
from bench.report import Report
from bench.stack import Container, Simulator, Stack, admin_stats, running_stack


@dataclass(frozen=True)
class Params:
    """The knobs of one run."""

    clients: int = 1000
    containers: int = 50
    duration_s: float = 60.0
    replicas: int = 2
    procs: int = 2
    seed: int = 7


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command-line flags of ``python -m bench coalescing``."""
    p.add_argument("--clients", type=int, default=Params.clients, help="N polling clients")
    p.add_argument("--containers", type=int, default=Params.containers, help="M containers")
    p.add_argument("--duration", type=float, default=Params.duration_s, help="seconds of load")
    p.add_argument("--replicas", type=int, default=Params.replicas, help="proxy replicas")
    p.add_argument("--procs", type=int, default=Params.procs, help="client processes")
    p.add_argument("--seed", type=int, default=Params.seed)
    p.add_argument("--quick", action="store_true", help="100 clients, 10 containers, 40 s")


def params_from(args: argparse.Namespace) -> Params:
    """Flags to parameters (``--quick`` overrides the sizes)."""
    if args.quick:
        return Params(100, 10, 40.0, args.replicas, 1, args.seed)
    return Params(
        args.clients, args.containers, args.duration, args.replicas, args.procs, args.seed
    )


def make_containers(sim: Simulator, count: int, rng: random.Random) -> list[Container]:
    """Containers that stay in flight through the run, with a stage long enough for 5 s polls.

    Half begin mid-way through a long first stage; half start with a short stage and then a long
    one, so stage changes (back to 2 s) and long stages (5 s after 30 s) both happen.
    """
    made = []
    for i in range(count):
        if i % 2 == 0:
            stages = [("generating_visuals", 48.0), ("rendering", 40.0), ("finalizing", 40.0)]
            made.append(sim.create(stages, start_offset_s=-rng.uniform(0.0, 10.0)))
        else:
            first = round(rng.uniform(3.0, 12.0), 1)
            stages = [
                ("generating_script", first),
                ("generating_visuals", 50.0),
                ("rendering", 40.0),
                ("finalizing", 40.0),
            ]
            made.append(sim.create(stages))
    return made


def run_clients(stack: Stack, containers: list[Container], p: Params) -> tuple[PollResult, float]:
    """Run the pollers in ``p.procs`` processes; returns what they saw and the window's end."""
    urls = []
    for i in range(p.clients):
        c = containers[i % len(containers)]
        replica = stack.proxies[(i // len(containers)) % len(stack.proxies)]
        urls.append((c.id, f"{replica.url}/v1/content/{c.id}/progress"))
    start_wall = time.time() + 3.0  # time for the workers to start and import
    ctx = mp.get_context("spawn")
    workers = []
    for w in range(p.procs):
        plan = PollPlan(urls[w :: p.procs], start_wall, p.duration_s, seed=p.seed * 100 + w)
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=worker_main, args=(plan, child), daemon=True)
        proc.start()
        workers.append((proc, parent))
    merged = PollResult()
    for proc, conn in workers:
        part: PollResult = conn.recv()
        merged.seen.extend(part.seen)
        for k, v in part.errors.items():
            merged.errors[k] = merged.errors.get(k, 0) + v
        proc.join(30)
    return merged, start_wall + p.duration_s


def run(p: Params) -> Report:
    """Run the benchmark and build its report."""
    raise_nofile()
    rng = random.Random(p.seed)
    with running_stack(replicas=p.replicas) as stack:
        sim = stack.simulator
        containers = make_containers(sim, p.containers, rng)
        result, end_wall = run_clients(stack, containers, p)
        time.sleep(0.5)  # let the last upstream answers be logged
        requests = sim.progress_requests()
        stats = [admin_stats(proxy.url) for proxy in stack.proxies]
    return build_report(p, containers, requests, result, end_wall, stats)
