"""The phases of the SSE benchmark: the stream ladder and the polling comparison."""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.client_pool import Pool, WorkerSpec
from bench.procfs import LOAD_CPUS, SERVER_CPUS, cpu_s, mem_available_kb, pin, rss_kb
from bench.sources import SourceIndex
from bench.sse_measure import Window, fan_out
from bench.stack import Container, Simulator, Stack
from proxy.testing.processes import ManagedProcess

if TYPE_CHECKING:
    from bench.sse import Params

# Stop stepping up when the machine has less than this much memory left.
MIN_AVAILABLE_KB = 1024 * 1024
_STAGE_NAMES = ("generating_script", "generating_visuals", "rendering", "finalizing")


@dataclass
class Step:
    """One rung of the ladder (or the polling comparison)."""

    k: int
    opened: int
    failed: int
    open_s: float
    rss_kb: int
    cpu_s: float
    window_s: float
    window: Window
    fan_out: dict[str, Any] = field(default_factory=dict)


def long_containers(sim: Simulator, count: int) -> list[Container]:
    """Containers that stay in flight for 20 minutes, changing stage every 20 s (2 s cadence)."""
    stages = [(_STAGE_NAMES[i % len(_STAGE_NAMES)], 20.0) for i in range(60)]
    return [sim.create(stages) for _ in range(count)]


def clock_offset_s(sim: Simulator) -> float:
    """The simulator's wall clock minus ours."""
    before = time.time()
    theirs = sim.wall()
    return theirs - (before + time.time()) / 2


def warm(proxy: ManagedProcess, containers: list[Container], spread_s: float = 0.0) -> None:
    """Make every container hot in the proxy (one cold fetch each), ``spread_s`` apart in all.

    The first fetch sets the phase of a container's 2 s poll loop: spreading the fetches spreads
    the snapshots over the interval, as independent containers would be; without it every
    container's snapshot lands in the same instant and their fan-outs queue behind each other.
    """
    t0 = time.monotonic()
    for i, c in enumerate(containers):
        time.sleep(max(0.0, t0 + i * spread_s / len(containers) - time.monotonic()))
        url = f"{proxy.url}/v1/content/{c.id}/progress"
        with urllib.request.urlopen(url, timeout=20):  # noqa: S310 (loopback)
            pass


def _specs(
    proxy: ManagedProcess, containers: list[Container], n: int, procs: int, suffix: str
) -> list[WorkerSpec]:
    """Connection j watches container j mod M; worker w holds connections w, w+procs, ..."""
    m = len(containers)
    targets = [(j % m, f"/v1/content/{containers[j % m].id}/progress{suffix}") for j in range(n)]
    return [
        WorkerSpec("127.0.0.1", proxy.port, targets[w::procs], LOAD_CPUS, seed=w)
        for w in range(procs)
    ]


def _share(k: int, procs: int) -> list[int]:
    return [len(range(w, k, procs)) for w in range(procs)]


def _per_container(k: int, m: int) -> dict[int, int]:
    return {c: len(range(c, k, m)) for c in range(m)}


def measure(
    pool: Pool,
    pid: int,
    window_s: float,
    sim: Simulator,
    ids: list[str],
    per_container: dict[int, int],
) -> tuple[Window, float, dict[str, Any]]:
    """Record for ``window_s``: what the clients got, the proxy's CPU seconds, the fan-out."""
    offset = clock_offset_s(sim)
    pool.call("record")
    lo, cpu0 = time.time(), cpu_s(pid)
    clients0 = sum(cpu_s(c) for c in pool.pids)
    time.sleep(window_s)
    hi, cpu1 = time.time(), cpu_s(pid)
    clients_busy = (sum(cpu_s(c) for c in pool.pids) - clients0) / window_s
    window = Window.merge(pool.call("collect"))
    window.clients_busy = clients_busy
    sources = SourceIndex(sim.progress_requests())
    # Snapshots served in the last second may still be on their way: leave them out.
    fo = fan_out(window, ids, sources, per_container, (lo, hi - 1.0), offset)
    return window, cpu1 - cpu0, fo.summary()


def _step(k: int, replies: list[dict[str, Any]], open_s: float, pid: int) -> dict[str, Any]:
    return {
        "k": k,
        "opened": sum(r["open"] for r in replies),
        "failed": sum(r["failed"] for r in replies),
        "open_s": open_s,
        "rss_kb": rss_kb(pid),
    }


def ladder(
    stack: Stack, containers: list[Container], p: Params, cap: int
) -> tuple[int, list[Step], str]:
    """Streams: step K up until errors, the fd cap or low memory.

    Returns the baseline RSS, the steps and why the ladder stopped.
    """
    proxy = stack.proxies[0]
    assert proxy.proc is not None
    pid, sim, ids = proxy.proc.pid, stack.simulator, [c.id for c in containers]
    rungs = sorted({min(k, cap) for k in (*p.ladder, p.subscribers)})
    pool = Pool(_specs(proxy, containers, rungs[-1], p.procs, "/stream"))
    steps: list[Step] = []
    stopped = "end of ladder" if rungs[-1] >= max(p.ladder) else f"fd limit ({cap} streams)"
    try:
        pool.call("collect")  # returns once every worker runs
        time.sleep(1.0)
        rss0 = rss_kb(pid)
        for k in rungs:
            if mem_available_kb() < MIN_AVAILABLE_KB:
                stopped = "memory"
                break
            t0 = time.monotonic()
            replies = pool.call_each("open_streams", [[n] for n in _share(k, p.procs)])
            open_s = time.monotonic() - t0
            time.sleep(2.0)
            head = _step(k, replies, open_s, pid)
            window_s = p.window_s if k == min(p.subscribers, cap) else p.step_window_s
            per = _per_container(k, len(containers))
            window, cpu, fo = measure(pool, pid, window_s, sim, ids, per)
            steps.append(Step(**head, cpu_s=cpu, window_s=window_s, window=window, fan_out=fo))
            _progress(steps[-1])
            if steps[-1].failed or window.errors or steps[-1].opened < k:
                stopped = "errors"
                break
        pool.call("close")
    finally:
        pool.close()
    return rss0, steps, stopped


def _progress(s: Step) -> None:
    last = s.fan_out["last_subscriber_ms"]["p99"]
    errors = s.failed + sum(s.window.errors.values())
    print(
        f"  sse: {s.k} streams open in {s.open_s:.1f}s, rss {s.rss_kb / 1024:.0f} MiB, "
        f"last-subscriber p99 {last:.0f} ms, errors {errors}",
        flush=True,
    )


def polling(stack: Stack, containers: list[Container], p: Params, k: int) -> Step:
    """The same K clients polling every 2 s (If-None-Match) on a fresh proxy."""
    stack.stop_proxy(stack.proxies[0])
    proxy = stack.add_proxy()
    assert proxy.proc is not None
    pid, sim, ids = proxy.proc.pid, stack.simulator, [c.id for c in containers]
    pin(pid, SERVER_CPUS)
    warm(proxy, containers)
    pool = Pool(_specs(proxy, containers, k, p.procs, ""))
    try:
        t0 = time.monotonic()
        shares = [[n, p.poll_interval_s] for n in _share(k, p.procs)]
        replies = pool.call_each("open_pollers", shares)
        head = _step(k, replies, time.monotonic() - t0, pid)
        time.sleep(p.poll_interval_s * 2)
        window, cpu, fo = measure(pool, pid, p.window_s, sim, ids, {})
        head["rss_kb"] = rss_kb(pid)
        pool.call("close")
    finally:
        pool.close()
    return Step(**head, cpu_s=cpu, window_s=p.window_s, window=window, fan_out=fo)
