"""The processes a benchmark drives (redis-server, the simulator, proxy replicas) and their APIs."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy.simulator.state import DEFAULT_KEY
from proxy.testing.processes import (
    ManagedProcess,
    free_port,
    start_proxy,
    start_redis,
    start_simulator,
)

ADMIN_TOKEN = "bench-admin-token"  # noqa: S105 (a throwaway token for loopback benchmarks)
# High enough that neither the simulator's nor the proxy's budget shapes a benchmark.
UNLIMITED_RATE_PER_MIN = 1_000_000


def http_json(
    method: str, url: str, body: Any = None, headers: Mapping[str, str] | None = None
) -> Any:
    """One JSON request on loopback (control APIs only, never the measured path)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))  # noqa: S310 (loopback URLs built here)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
        return json.loads(resp.read() or b"null")


@dataclass(frozen=True)
class Container:
    """A container the benchmark created, with what is needed to replay its timeline."""

    id: str
    stages: tuple[tuple[str, float], ...]
    started_wall: float  # simulator wall clock at creation (midpoint of two clock reads)
    start_offset_s: float = 0.0


@dataclass
class Simulator:
    """The simulator's control API."""

    url: str

    def wall(self) -> float:
        """The simulator's wall clock (its request log uses it)."""
        return float(http_json("GET", self.url + "/_sim/clock")["wall"])

    def set_budget(self, rate_per_min: int) -> None:
        """Change the per-key read budget."""
        http_json("POST", self.url + "/_sim/budget", {"rate_per_min": rate_per_min})

    def create(self, stages: Sequence[tuple[str, float]], start_offset_s: float = 0.0) -> Container:
        """Start a container that runs ``stages`` and then completes."""
        before = self.wall()
        made = http_json(
            "POST",
            self.url + "/_sim/containers",
            {
                "stages": [list(s) for s in stages],
                "ending": "completed",
                "queued_s": 0,
                "with_job": False,
                "start_offset_s": start_offset_s,
            },
        )
        after = self.wall()
        started = (before + after) / 2 + start_offset_s
        return Container(made["containerId"], tuple(stages), started, start_offset_s)

    def progress_requests(self) -> list[dict[str, Any]]:
        """Every answered progress request the simulator logged, oldest first."""
        out: list[dict[str, Any]] = []
        since = 0
        while True:
            page = http_json("GET", f"{self.url}/_sim/requests?kind=progress&since_index={since}")
            records = page["requests"]
            out.extend(r for r in records if r["status"] is not None)
            if not records or page["next_index"] <= since:
                return out
            since = max(r["index"] for r in records) + 1
            if since >= page["next_index"]:
                return out


def admin_stats(proxy_url: str) -> dict[str, Any]:
    """A replica's counters."""
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    result: dict[str, Any] = http_json("GET", proxy_url + "/admin/stats", headers=auth)
    return result


def proxy_env(sim_url: str, redis_url: str, **settings: str) -> dict[str, str]:
    """The environment of a proxy replica in a benchmark (quiet logs, no client auth)."""
    env = {
        "LAYERS_API_KEY": DEFAULT_KEY,
        "LAYERS_API_URL": sim_url,
        "REDIS_URL": redis_url,
        "PROXY_AUTH": "none",
        "PROXY_ADMIN_TOKEN": ADMIN_TOKEN,
        "PROXY_ACCESS_LOG": "off",
        "PROXY_LOG_LEVEL": "warning",
        "LAYERS_RATE_PER_MIN": str(UNLIMITED_RATE_PER_MIN),
    }
    env.update({f"PROXY_{k.upper()}": v for k, v in settings.items()})
    return env


@dataclass
class Stack:
    """Redis, the simulator and proxy replicas, stopped together."""

    redis: ManagedProcess
    sim: ManagedProcess
    proxies: list[ManagedProcess] = field(default_factory=list)
    # A diagnostic: run replicas with gc.set_threshold(*this) (None: Python's defaults).
    gc_threshold: tuple[int, ...] | None = None

    @property
    def redis_url(self) -> str:
        """The Redis the replicas share."""
        return f"redis://127.0.0.1:{self.redis.port}/0"

    @property
    def simulator(self) -> Simulator:
        """The simulator's control API."""
        return Simulator(self.sim.url)

    def add_proxy(self, **settings: str) -> ManagedProcess:
        """Start one more replica."""
        env = proxy_env(self.sim.url, self.redis_url, **settings)
        name = f"proxy-{len(self.proxies)}"
        if self.gc_threshold is None:
            proc = start_proxy(env, name=name)
        else:
            proc = _start_proxy_with_gc(env, name, self.gc_threshold)
        self.proxies.append(proc)
        return proc

    def stop_proxy(self, proc: ManagedProcess) -> None:
        """Stop one replica gracefully (it hands its leases back)."""
        proc.stop()
        self.proxies.remove(proc)


def _start_proxy_with_gc(
    env: Mapping[str, str], name: str, threshold: tuple[int, ...]
) -> ManagedProcess:
    """``layers-proxy serve`` behind a two-line prelude that sets the GC thresholds."""
    port = free_port()
    code = (
        f"import gc, sys; gc.set_threshold(*{tuple(threshold)!r}); "
        "from proxy.cli import main; sys.exit(main(['serve']))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PROXY_", "LAYERS_"))}
    full_env = {**clean, "PYTHONUNBUFFERED": "1", "PROXY_PORT": str(port), **env}
    proc = ManagedProcess(name, [sys.executable, "-c", code], full_env, port)
    return proc.start("proxy listening on")


@contextlib.contextmanager
def running_stack(
    replicas: int = 1, gc_threshold: tuple[int, ...] | None = None, **settings: str
) -> Iterator[Stack]:
    """Start redis-server, the simulator (budget lifted) and ``replicas`` proxies; stop all."""
    started: list[ManagedProcess] = []
    stack: Stack | None = None
    try:
        redis = start_redis()
        started.append(redis)
        sim = start_simulator(args=["--rate-per-min", str(UNLIMITED_RATE_PER_MIN)])
        started.append(sim)
        stack = Stack(redis, sim, gc_threshold=gc_threshold)
        for _ in range(replicas):
            stack.add_proxy(**settings)
        yield stack
    finally:
        # Replicas first, so they hand their leases back while Redis still runs.
        for proxy in list(stack.proxies if stack is not None else []):
            proxy.stop()
        for proc in reversed(started):
            proc.stop()


def wait_until(predicate: Any, timeout_s: float, step_s: float = 0.2) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return bool(predicate())
