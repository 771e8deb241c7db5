"""Benchmark (issue 11): the lease holder's work per upstream poll, CPU and Redis snapshot reads.

One proxy process (pinned to CPU 0) with a real Redis and the simulator; N containers at the 2 s
cadence, each watched by one SSE stream that a client process (CPU 1) holds. Over the window:

* polls: upstream progress GETs in the simulator's request log (the proxy is the only client);
* CPU per poll: the proxy process's user + system CPU time (``/proc``) divided by the polls,
  gross and net of the baseline;
* snapshot reads per poll: top-level ``HGETALL`` of snapshot hashes, counted on a ``MONITOR``
  connection (``INFO commandstats`` cannot tell them from the ``HGETALL`` the fenced write script
  runs inside Redis, which it also counts; its deltas are reported per poll beside them).

Baseline, measured first in the same run on the same proxy process: nothing watched and the same
number of connections open and silent (the header timeout is raised for the run so they stay).
Its CPU rate is what the process burns regardless of polls (timers, probes, the header watch over
N connections); the net figure subtracts it over the window.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from bench.client_pool import Pool, WorkerSpec
from bench.procfs import LOAD_CPUS, SERVER_CPUS, cpu_s, pin, raise_nofile
from bench.report import Report
from bench.sse_phases import clock_offset_s, long_containers, warm
from bench.stack import Container, admin_stats, running_stack, wait_until
from proxy.testing.processes import ManagedProcess

# The lease holder's CPU per poll must stay under this (issue 11).
CPU_TARGET_MS = 1.5
# A lone replica writes every snapshot itself: it should read none back.
READS_TARGET = 0.01
# Silent connections must outlive the baseline window (they never send a request head).
HEADER_TIMEOUT_S = 600
_IDLE_INTERVAL_S = 1e9  # a "poller" that never polls: an open, silent connection


@dataclass(frozen=True)
class Params:
    """The knobs of one run."""

    containers: int = 200
    window_s: float = 30.0
    baseline_s: float = 10.0
    settle_s: float = 6.0
    procs: int = 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The command-line flags of ``python -m bench polls``."""
    p.add_argument("--containers", type=int, default=Params.containers, help="N watched")
    p.add_argument("--window", type=float, default=Params.window_s, help="seconds measured")
    p.add_argument("--baseline", type=float, default=Params.baseline_s, help="idle seconds")
    p.add_argument("--procs", type=int, default=Params.procs, help="client processes")
    p.add_argument("--quick", action="store_true", help="50 containers, 10 s window")


def params_from(args: argparse.Namespace) -> Params:
    """Flags to parameters (``--quick`` overrides the sizes)."""
    if args.quick:
        return Params(containers=50, window_s=10.0, baseline_s=5.0, settle_s=4.0, procs=1)
    return Params(args.containers, args.window, args.baseline, Params.settle_s, args.procs)


# -- Redis: what the proxy sent ----------------------------------------------------------------

_MONITOR_LINE = re.compile(rb'^\+[\d.]+ \[\d+ ([^\]]+)\] "([^"]*)"(?: "([^"]*)")?')


@dataclass
class MonitorTally:
    """Top-level commands seen on a MONITOR connection (script-internal ones kept apart)."""

    commands: Counter[str] = field(default_factory=Counter)
    in_scripts: Counter[str] = field(default_factory=Counter)
    snapshot_reads: int = 0
    readers: Counter[str] = field(default_factory=Counter)
    recording: bool = False

    def line(self, raw: bytes) -> None:
        """Count one MONITOR line."""
        m = _MONITOR_LINE.match(raw)
        if m is None or not self.recording:
            return
        who, cmd, first = m.group(1), m.group(2).decode().lower(), m.group(3) or b""
        if who == b"lua":
            self.in_scripts[cmd] += 1
            return
        self.commands[cmd] += 1
        if cmd == "hgetall" and first.endswith(b":snap"):
            self.snapshot_reads += 1
            self.readers[who.decode()] += 1


@contextlib.contextmanager
def monitoring(port: int) -> Iterator[MonitorTally]:
    """A thread reading ``MONITOR`` from the Redis on ``port`` until the block ends."""
    tally = MonitorTally()
    stop = threading.Event()
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"MONITOR\r\n")
    sock.settimeout(0.2)

    def read() -> None:
        buf = b""
        while not stop.is_set():
            try:
                chunk = sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.split(b"\r\n")
            for raw in lines:
                tally.line(raw)

    thread = threading.Thread(target=read, daemon=True, name="redis-monitor")
    thread.start()
    try:
        yield tally
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def command_calls(client: redis.Redis) -> Counter[str]:
    """``INFO commandstats`` as command → calls (script-internal calls included)."""
    stats: dict[str, Any] = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


# -- the phases ----------------------------------------------------------------------------------


def _specs(proxy: ManagedProcess, containers: list[Container], procs: int) -> list[WorkerSpec]:
    targets = [(i, f"/v1/content/{c.id}/progress/stream") for i, c in enumerate(containers)]
    return [
        WorkerSpec("127.0.0.1", proxy.port, targets[w::procs], LOAD_CPUS, seed=w)
        for w in range(procs)
    ]


def _upstream_requests(proxy: ManagedProcess) -> int:
    stats = admin_stats(proxy.url)
    return int(stats.get("upstream_requests", stats.get("stats", {}).get("upstream_requests", 0)))


@dataclass
class Measured:
    """What one run measured."""

    n: int
    idle_cpu_s: float = 0.0
    idle_open: int = 0
    window_s: float = 0.0
    cpu_s: float = 0.0
    polls: int = 0
    proxy_polls: int = 0
    streams_open: int = 0
    events: int = 0
    monitor: MonitorTally = field(default_factory=MonitorTally)
    calls: Counter[str] = field(default_factory=Counter)


def baseline(pool: Pool, pid: int, p: Params, m: Measured) -> None:
    """Nothing watched, N silent connections open: the CPU the process burns regardless."""
    replies = pool.call("open_pollers", p.containers, _IDLE_INTERVAL_S)
    m.idle_open = sum(r["open"] for r in replies)
    time.sleep(1.0)
    cpu0 = cpu_s(pid)
    time.sleep(p.baseline_s)
    m.idle_cpu_s = cpu_s(pid) - cpu0
    pool.call("close")


def watched(
    pool: Pool, proxy: ManagedProcess, rc: redis.Redis, sim: Any, p: Params, m: Measured
) -> None:
    """N streams, one per container: CPU, polls and Redis commands over the window."""
    assert proxy.proc is not None
    replies = pool.call("open_streams", p.containers)
    m.streams_open = sum(r["open"] for r in replies)
    time.sleep(p.settle_s)
    offset = clock_offset_s(sim)
    with monitoring(rc.connection_pool.connection_kwargs["port"]) as mon:
        time.sleep(0.5)  # the MONITOR connection is up
        pool.call("record")
        calls0, up0 = command_calls(rc), _upstream_requests(proxy)
        mon.recording = True
        lo, cpu0 = time.time(), cpu_s(proxy.proc.pid)
        time.sleep(p.window_s)
        hi, cpu1 = time.time(), cpu_s(proxy.proc.pid)
        mon.recording = False
        calls1, up1 = command_calls(rc), _upstream_requests(proxy)
        m.monitor = mon
    m.events = sum(r["events"] for r in pool.call("collect"))
    m.window_s, m.cpu_s = hi - lo, cpu1 - cpu0
    m.calls = calls1 - calls0
    m.proxy_polls = up1 - up0
    time.sleep(0.5)  # the last answers reach the request log
    m.polls = sum(
        1 for r in sim.progress_requests() if lo + offset <= float(r["t_wall"]) < hi + offset
    )


def run(p: Params) -> Report:
    """Run the baseline and the watched window; build the report."""
    raise_nofile()
    m = Measured(p.containers)
    with running_stack(replicas=1, header_timeout_s=str(HEADER_TIMEOUT_S)) as stack:
        proxy = stack.proxies[0]
        assert proxy.proc is not None
        pin(proxy.proc.pid, SERVER_CPUS)
        rc = redis.Redis(port=stack.redis.port)
        containers = long_containers(stack.simulator, p.containers)
        pool = Pool(_specs(proxy, containers, p.procs))
        try:
            pool.call("collect")  # every worker runs
            baseline(pool, proxy.proc.pid, p, m)
            # Spread the first fetches over the cadence, as independent containers would be.
            warm(proxy, containers, 2.0)
            wait_until(lambda: _upstream_requests(proxy) >= 2 * p.containers, 30)
            watched(pool, proxy, rc, stack.simulator, p, m)
        finally:
            pool.close()
            rc.close()
    return build_report(p, m)


def build_report(p: Params, m: Measured) -> Report:
    """The table and the JSON of one run."""
    polls = max(1, m.polls)
    idle_rate = m.idle_cpu_s / p.baseline_s
    gross_ms = m.cpu_s / polls * 1000
    net_ms = (m.cpu_s - idle_rate * m.window_s) / polls * 1000
    reads = m.monitor.snapshot_reads / polls
    top = sum(m.monitor.commands.values())
    report = Report(
        "polls",
        f"Work per upstream poll: {m.n} containers watched (one SSE stream each), one proxy",
        {
            "containers": p.containers,
            "window_s": p.window_s,
            "baseline_s": p.baseline_s,
            "client_procs": p.procs,
        },
    )
    report.add("streams open / silent connections (baseline)", f"{m.streams_open} / {m.idle_open}")
    report.add("upstream polls (simulator log)", f"{m.polls} ({m.polls / m.window_s:.1f}/s)")
    report.add("upstream requests (proxy's own count)", str(m.proxy_polls))
    report.add("stream events delivered per poll", f"{m.events / polls:.2f}")
    report.add("baseline CPU, idle with N connections", f"{idle_rate * 1000:.1f} ms/s")
    report.add("proxy CPU per poll (gross)", f"{gross_ms:.3f} ms")
    report.add(
        "proxy CPU per poll (net of baseline)",
        f"{net_ms:.3f} ms",
        f"≤ {CPU_TARGET_MS} ms",
        net_ms <= CPU_TARGET_MS,
    )
    report.add(
        "snapshot reads per poll (top-level HGETALL)",
        f"{reads:.3f}",
        f"≤ {READS_TARGET} (the writer reads none)",
        reads <= READS_TARGET,
    )
    report.add("Redis commands per poll (top-level)", f"{top / polls:.2f}")
    rows = [
        [
            cmd,
            f"{m.monitor.commands.get(cmd, 0) / polls:.3f}",
            f"{m.calls.get(cmd, 0) / polls:.3f}",
        ]
        for cmd in sorted(set(m.monitor.commands) | set(m.calls))
        if m.calls.get(cmd, 0) or m.monitor.commands.get(cmd, 0)
    ]
    report.add_table(
        "Redis commands per poll (top-level from MONITOR; commandstats counts script calls too)",
        ["command", "top-level", "commandstats"],
        rows,
    )
    report.data = {
        "idle_cpu_s": m.idle_cpu_s,
        "cpu_s": m.cpu_s,
        "window_s": m.window_s,
        "polls": m.polls,
        "cpu_per_poll_ms_gross": gross_ms,
        "cpu_per_poll_ms_net": net_ms,
        "snapshot_reads_per_poll": reads,
        "monitor_commands": dict(m.monitor.commands),
        "monitor_in_scripts": dict(m.monitor.in_scripts),
        "snapshot_reads_by_client": dict(m.monitor.readers),
        "commandstats_delta": dict(m.calls),
    }
    return report
