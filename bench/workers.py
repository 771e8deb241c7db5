"""Benchmark (issue 9 item 2): cached-poll throughput of PROXY_WORKERS=2 against PROXY_WORKERS=1.

Two proxies run at once in front of one simulator and one private redis-server: a plain
``layers-proxy serve`` (``PROXY_WORKERS=1``) and a supervisor with two ``SO_REUSEPORT`` workers
(``PROXY_WORKERS=2``), both in open mode. Both answer 200 for the same cached in-flight container
and get the same ``wrk -t2 -c64`` load in turn, several rounds, alternating which goes first; the
headline is the median of the per-round ratios. Each CPU layout is measured separately:

- ``shared``: nothing is pinned; the kernel places the workers, wrk's threads, Redis and the
  simulator on the machine's cores (on 2 cores wrk competes with the workers for them).
- ``split`` (2+ cores): wrk on CPU 1 and every proxy process on CPU 0, as in ``throughput``: the
  server gets exactly one core whatever its worker count, so this shows what a second process
  adds without a second core.

Per run it also reads from /proc: the CPU time of every proxy process, of wrk (a reaped child),
of Redis and the simulator, the machine's busy time (so other work on it shows), and how the 64
keep-alive connections landed on the workers (``SO_REUSEPORT`` hashes each connection to one).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import threading
import time
from dataclasses import dataclass, field

from bench.procfs import CLOCK_TICKS, LOAD_CPUS, SERVER_CPUS, cpu_s
from bench.report import Report
from bench.stack import Stack, running_stack, wait_until
from bench.throughput import capture
from bench.workers_report import build_report
from bench.wrk import WrkResult, run_wrk, wrk_binary
from proxy.testing.processes import ManagedProcess

LAYOUTS = ("shared", "split")
_READY = "proxy listening on"


@dataclass(frozen=True)
class Params:
    """The knobs of one run."""

    duration_s: float = 5.0
    rounds: int = 4
    connections: int = 64
    threads: int = 2
    warmup_s: float = 2.0
    layouts: tuple[str, ...] = LAYOUTS


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command-line flags of ``python -m bench workers``."""
    p.add_argument("--duration", type=float, default=Params.duration_s, help="seconds per run")
    p.add_argument("--rounds", type=int, default=Params.rounds, help="runs per configuration")
    p.add_argument("--connections", type=int, default=Params.connections, help="wrk -c")
    p.add_argument("--threads", type=int, default=Params.threads, help="wrk -t")
    p.add_argument(
        "--layouts",
        default=",".join(LAYOUTS),
        help="CPU layouts to measure, comma-separated: shared (nothing pinned), split (wrk on "
        "CPU 1, the proxy on CPU 0)",
    )
    p.add_argument("--quick", action="store_true", help="2 rounds of 3 s per layout")


def params_from(args: argparse.Namespace) -> Params:
    """Flags to parameters."""
    layouts = tuple(x.strip() for x in args.layouts.split(",") if x.strip())
    unknown = set(layouts) - set(LAYOUTS)
    if unknown or not layouts:
        raise SystemExit(f"--layouts: choose from {', '.join(LAYOUTS)} (got {args.layouts!r})")
    if args.quick:
        return Params(3.0, 2, args.connections, args.threads, 1.0, layouts)
    return Params(args.duration, args.rounds, args.connections, args.threads, 2.0, layouts)


# -- /proc readers ---------------------------------------------------------------------------


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (this kernel has no /proc/<pid>/task/<tid>/children)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                raw = fh.read()
        except OSError:
            continue
        if int(raw[raw.rindex(")") + 2 :].split()[1]) == pid:
            out.append(int(entry))
    return sorted(out)


def set_affinity(pid: int, cpus: set[int]) -> None:
    """Restrict every thread of ``pid`` (not only its main thread) to ``cpus``."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError, FileNotFoundError):
            os.sched_setaffinity(int(tid), cpus)


def machine_ticks() -> tuple[int, int]:
    """(busy, steal) ticks of the whole machine so far, all CPUs."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = f[:7]
    return user + nice + system + irq + softirq, f[7] if len(f) > 7 else 0


def children_cpu_s() -> float:
    """CPU seconds of every child this process has reaped (wrk is the only one in a run)."""
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def established_per_pid(port: int, pids: list[int]) -> list[int]:
    """How many established server-side connections on ``port`` each of ``pids`` holds."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                lines = fh.readlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "01" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{cols[9]}]")
    counts = []
    for pid in pids:
        n = 0
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                n += os.readlink(f"/proc/{pid}/fd/{fd}") in inodes
            except OSError:
                continue
        counts.append(n)
    return counts


# -- the two proxies -------------------------------------------------------------------------


@dataclass
class Group:
    """One ``layers-proxy serve`` invocation: its top process and the workers that serve."""

    name: str
    proc: ManagedProcess
    workers: list[int]

    @property
    def pids(self) -> list[int]:
        """Every process of the group (the supervisor too, when there is one)."""
        assert self.proc.proc is not None
        top = self.proc.proc.pid
        return [top, *(w for w in self.workers if w != top)]


def start_group(stack: Stack, count: int) -> Group:
    """Start ``PROXY_WORKERS=count`` and wait until every worker listens."""
    proc = stack.add_proxy(workers=str(count))  # waits for the first worker's ready line
    assert proc.proc is not None
    top = proc.proc.pid

    def ready() -> bool:
        return proc.output().count(_READY) >= count

    if not wait_until(ready, 30):
        raise RuntimeError(f"{count} workers not ready in 30 s:\n{proc.output()}")
    workers = [top] if count == 1 else child_pids(top)
    if len(workers) != count:
        raise RuntimeError(f"expected {count} worker processes under {top}, found {workers}")
    return Group("1 worker" if count == 1 else f"{count} workers", proc, workers)


# -- one measured run ------------------------------------------------------------------------


@dataclass
class Run:
    """One wrk run against one group, with what /proc said about it."""

    wrk: WrkResult
    elapsed_s: float
    proxy_cpu_s: float
    worker_cpu_s: list[float]
    wrk_cpu_s: float
    support_cpu_s: float  # redis-server + simulator
    machine_busy_s: float
    steal_s: float
    connections: list[int] = field(default_factory=list)

    @property
    def others_cpu_s(self) -> float:
        """Busy CPU time on the machine that none of this benchmark's processes used."""
        ours = self.proxy_cpu_s + self.wrk_cpu_s + self.support_cpu_s
        return max(0.0, self.machine_busy_s - ours)


def measure(stack: Stack, group: Group, url: str, p: Params, layout: str) -> Run:
    """Run wrk once against ``group``; sample connections per worker halfway through."""
    support = [pr.proc.pid for pr in (stack.redis, stack.sim) if pr.proc is not None]
    sampled: list[list[int]] = []
    timer = threading.Timer(
        p.duration_s / 2,
        lambda: sampled.append(established_per_pid(group.proc.port, group.workers)),
    )
    before_workers = [cpu_s(w) for w in group.workers]
    before_proxy = sum(cpu_s(x) for x in group.pids)
    before_support = sum(cpu_s(x) for x in support)
    before_wrk = children_cpu_s()
    busy0, steal0 = machine_ticks()
    t0 = time.monotonic()
    timer.start()
    try:
        result = run_wrk(
            url,
            duration_s=p.duration_s,
            connections=p.connections,
            threads=p.threads,
            cpus=LOAD_CPUS if layout == "split" else None,
        )
    finally:
        timer.cancel()
    elapsed = time.monotonic() - t0
    busy1, steal1 = machine_ticks()
    return Run(
        wrk=result,
        elapsed_s=elapsed,
        proxy_cpu_s=sum(cpu_s(x) for x in group.pids) - before_proxy,
        worker_cpu_s=[cpu_s(w) - b for w, b in zip(group.workers, before_workers, strict=True)],
        wrk_cpu_s=children_cpu_s() - before_wrk,
        support_cpu_s=sum(cpu_s(x) for x in support) - before_support,
        machine_busy_s=(busy1 - busy0) / CLOCK_TICKS,
        steal_s=(steal1 - steal0) / CLOCK_TICKS,
        connections=sampled[0] if sampled else [],
    )


def apply_layout(groups: list[Group], layout: str) -> None:
    """Pin (``split``) or unpin (``shared``) every thread of every proxy process."""
    cpus = set(SERVER_CPUS) if layout == "split" else set(os.sched_getaffinity(0))
    for group in groups:
        for pid in group.pids:
            set_affinity(pid, cpus)


def run(p: Params) -> Report:
    """Both configurations, alternately, in each layout; then the report."""
    wrk_binary()
    layouts = list(p.layouts)
    skipped = []
    if "split" in layouts and not os.sched_getaffinity(0) >= (SERVER_CPUS | LOAD_CPUS):
        layouts.remove("split")
        skipped.append("split (needs CPUs 0 and 1)")
    results: dict[str, dict[str, list[Run]]] = {}
    with running_stack(replicas=0) as stack:
        groups = [start_group(stack, 1), start_group(stack, 2)]
        live = stack.simulator.create([("generating_visuals", 3600.0)])
        path = f"/v1/content/{live.id}/progress"
        capture(groups[0].proc.url + path)  # the first answer fetches it upstream
        for layout in layouts:
            apply_layout(groups, layout)
            for g in groups:  # warm-up: every worker caches the container, wrk's first ramp
                run_wrk(
                    g.proc.url + path,
                    duration_s=p.warmup_s,
                    connections=p.connections,
                    threads=p.threads,
                    cpus=LOAD_CPUS if layout == "split" else None,
                )
            runs: dict[str, list[Run]] = {g.name: [] for g in groups}
            for r in range(p.rounds):
                for g in groups if r % 2 == 0 else reversed(groups):
                    runs[g.name].append(measure(stack, g, g.proc.url + path, p, layout))
            results[layout] = runs
        seen = {g.name: capture(g.proc.url + path)["headers"] for g in groups}  # cached by now
        # A worker the supervisor restarted mid-run would have been measured only in part.
        restarted = [g.name for g in groups[1:] if child_pids(g.pids[0]) != g.workers]
    return build_report(p, results, seen, skipped, restarted)
