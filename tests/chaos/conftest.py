"""Chaos fixtures: a private redis-server per test, the simulator, replicas, and cleanup.

``chaos`` gives each test a ``ChaosEnv``: it starts (and restarts, pauses, kills) its own
redis-server on a fixed port, starts proxy replicas with aggressive but valid settings, creates
simulator containers while remembering their timelines (the history checker orders progress by
them), and on teardown resumes anything paused and stops every process it started, whatever
the test did.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from proxy.simulator.state import DEFAULT_KEY
from proxy.testing.processes import (
    PROXY_READY,
    ManagedProcess,
    free_port,
    proxy_process,
    redis_workdir,
    restart_redis,
    start_redis,
    write_config,
)
from tests.chaos.clients import ClientGroup, Recording
from tests.chaos.history import Timeline, UpstreamRequest
from tests.conftest import Sim

# Aggressive but valid: failover in 3 s, Redis calls give up after 0.5 s, errors back off at
# most 2 s, a snapshot is "stale" after 4 s, streams heartbeat every 2 s and ask EventSource to
# come back after 1 s. The budget is out of the way (the fairness tests cover it).
CHAOS_ENV = {
    "PROXY_AUTH": "none",
    "LAYERS_RATE_PER_MIN": "100000",
    "PROXY_LEASE_TTL_S": "3",
    "PROXY_INTEREST_FLUSH_S": "1",
    "PROXY_REDIS_TIMEOUT_S": "0.5",
    "PROXY_LINGER_S": "5",
    "PROXY_UPSTREAM_TIMEOUT_S": "3",
    "PROXY_BACKOFF_BASE_S": "1",
    "PROXY_BACKOFF_MAX_S": "2",
    "PROXY_STALE_AFTER_S": "4",
    "PROXY_COLD_WAIT_S": "5",
    "PROXY_SSE_HEARTBEAT_S": "2",
    "PROXY_SSE_RETRY_MS": "1000",
    "PROXY_LOG_LEVEL": "info",
}
REDIS_TIMEOUT_S = float(CHAOS_ENV["PROXY_REDIS_TIMEOUT_S"])


class ChaosEnv:
    """One test's processes and what it created."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.redis_port = free_port()
        self.redis_password: str | None = None
        self.redis: ManagedProcess | None = None
        self.retired_redis: list[ManagedProcess] = []
        self.proxies: list[ManagedProcess] = []
        self.timelines: dict[str, Timeline] = {}
        self._dirs: set[Path] = set()
        self._files: set[Path] = set()
        self.name = "chaos"

    # -- redis ---------------------------------------------------------------------------------

    def redis_url(self) -> str:
        """The URL replicas use (with the password, when one is set)."""
        auth = f":{self.redis_password}@" if self.redis_password else ""
        return f"redis://{auth}127.0.0.1:{self.redis_port}/0"

    def start_redis(self, *, persistent: bool = False, password: str | None = None) -> None:
        """Start this test's redis-server on its port."""
        assert self.redis is None or self.redis.proc is None or self.redis.proc.poll() is not None
        self.redis_password = password
        self.redis = start_redis(self.redis_port, persistent=persistent, password=password)
        self._dirs.add(redis_workdir(self.redis))

    def kill_redis(self) -> None:
        """SIGKILL redis-server (a crash: nothing flushed but what the AOF already has)."""
        assert self.redis is not None
        self.redis.kill()

    def restart_redis(self) -> None:
        """Start redis-server again on the same port and directory (after ``kill_redis``)."""
        assert self.redis is not None
        self.retired_redis.append(self.redis)
        self.redis = restart_redis(self.redis)

    def pause(self, proc: ManagedProcess) -> None:
        """SIGSTOP ``proc`` (resumed at teardown if the test does not)."""
        proc.pause()

    def resume(self, proc: ManagedProcess) -> None:
        """SIGCONT ``proc``."""
        proc.resume()

    def redis_client(self) -> redis.Redis:
        """A synchronous client for direct commands (FLUSHALL and friends)."""
        return redis.Redis(port=self.redis_port, password=self.redis_password, socket_timeout=5)

    def config(self, text: str) -> Path:
        """A temporary config file, removed at teardown."""
        path = write_config(text)
        self._files.add(path)
        return path

    # -- proxies -------------------------------------------------------------------------------

    def proxy_env(self, **env: str) -> dict[str, str]:
        """The full environment a replica would get."""
        return {
            "LAYERS_API_KEY": DEFAULT_KEY,
            "LAYERS_API_URL": self.sim.url,
            "REDIS_URL": self.redis_url(),
            **CHAOS_ENV,
            **env,
        }

    def start_proxy(self, **env: str) -> ManagedProcess:
        """Start one replica; stopped at teardown."""
        return self.start_proxies(1, **env)[0]

    def start_proxies(self, n: int, **env: str) -> list[ManagedProcess]:
        """Start ``n`` replicas at once (start-up is mostly imports: overlap them)."""
        procs = []
        for _ in range(n):
            proc = proxy_process(self.proxy_env(**env), name=f"proxy{len(self.proxies)}")
            self.proxies.append(proc)  # before starting: teardown stops one that never got ready
            procs.append(proc)
        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            return list(pool.map(lambda p: p.start(PROXY_READY, timeout_s=30.0), procs))

    # -- the simulator -------------------------------------------------------------------------

    def container(
        self,
        stages: list[tuple[str, float]],
        *,
        ending: str = "completed",
        container_id: str | None = None,
    ) -> str:
        """Create a container running ``stages`` from now; remember its timeline."""
        body: dict[str, Any] = {"stages": [list(s) for s in stages], "queued_s": 0}
        if ending != "completed":
            body["ending"] = ending
        if container_id is not None:
            body["id"] = container_id
        before = time.monotonic()
        made = self.sim.call("POST", "/_sim/containers", body)
        cid = str(made["containerId"])
        self.timelines[cid] = Timeline(tuple(stages), created_at=before, ending=ending)
        return cid

    def upstream(self) -> list[UpstreamRequest]:
        """Every request that reached the simulator, as the checker takes them."""
        return UpstreamRequest.from_log(self.sim.requests())

    async def aupstream(self) -> list[UpstreamRequest]:
        """``upstream()`` off the event loop (clients may still be running)."""
        return await asyncio.to_thread(self.upstream)

    async def collect(self, recording: Recording) -> list[UpstreamRequest]:
        """The upstream log once the clients are done (dumped with the recording, if asked)."""
        upstream = await self.aupstream()
        self.dump(self.name, recording, upstream)
        return upstream

    def fault(self, **rule: Any) -> None:
        """Add a simulator fault rule; a kind it does not know fails the test, saying so."""
        try:
            self.sim.fault(**rule)
        except Exception as exc:
            text = getattr(exc, "reason", "") or str(exc)
            pytest.fail(
                f"the simulator refused fault {rule!r} ({text}); "
                "its fault kinds may not include this one yet",
                pytrace=False,
            )

    def dump(self, name: str, recording: Recording, upstream: Sequence[UpstreamRequest]) -> None:
        """With CHAOS_DUMP_DIR set, write what clients saw and what reached the upstream."""
        target = os.environ.get("CHAOS_DUMP_DIR")
        if not target:
            return
        out = Path(target)
        out.mkdir(parents=True, exist_ok=True)
        data = {
            "timelines": {k: dataclasses.asdict(v) for k, v in self.timelines.items()},
            "clients": [dataclasses.asdict(c) for c in recording.clients.values()],
            "observations": [
                {**dataclasses.asdict(o), "raw": o.raw[:2000].decode("utf-8", "replace")}
                for o in recording.observations
            ],
            "upstream": [dataclasses.asdict(u) for u in upstream],
            "proxy_output": {p.name: p.all_output().splitlines()[-2000:] for p in self.proxies},
        }
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        (out / f"{safe}.json").write_text(json.dumps(data, default=str))

    # -- teardown ------------------------------------------------------------------------------

    def cleanup(self) -> None:
        everything = [*self.proxies, *([self.redis] if self.redis else []), *self.retired_redis]
        for proc in everything:
            if proc.proc is not None and proc.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.resume()  # a stopped process cannot act on SIGTERM
        for proc in self.proxies:
            proc.stop()
        for proc in [*([self.redis] if self.redis else []), *self.retired_redis]:
            proc.kill()
        for d in self._dirs:
            shutil.rmtree(d, ignore_errors=True)
        for f in self._files:
            f.unlink(missing_ok=True)


@pytest.fixture
def chaos(sim: Sim, request: pytest.FixtureRequest) -> Iterator[ChaosEnv]:
    """A ``ChaosEnv`` around a fresh simulator; every process is gone after the test."""
    env = ChaosEnv(sim)
    env.name = request.node.name
    try:
        yield env
    finally:
        env.cleanup()


# -- helpers the chaos tests share ------------------------------------------------------------


async def warm(
    session: aiohttp.ClientSession,
    replicas: Sequence[ManagedProcess],
    containers: Sequence[str],
    *,
    token: str | None = None,
    timeout_s: float = 15.0,
    spread_s: float = 0.0,
) -> None:
    """One GET per container (round robin over replicas) until each has a snapshot.

    ``spread_s`` spaces the cold fetches out over that long, so the containers' poll loops run
    out of phase (otherwise they all poll within a few milliseconds of each other).
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for i, cid in enumerate(containers):
        if i and spread_s:
            await asyncio.sleep(spread_s / len(containers))
        url = f"{replicas[i % len(replicas)].url}/v1/content/{cid}/progress"
        deadline = time.monotonic() + timeout_s
        while True:
            async with session.get(url, headers=headers) as resp:
                if resp.status == 200:
                    break
                text = await resp.text()
            if time.monotonic() > deadline:
                raise AssertionError(f"no snapshot of {cid} before the fault: {text}")
            await asyncio.sleep(0.3)


def trouble(procs: Iterable[ManagedProcess], lines: int = 12) -> str:
    """The last warning/error lines of each process, for failure messages."""
    out = []
    for proc in procs:
        bad = [
            line
            for line in proc.all_output().splitlines()
            if '"level":"warning"' in line or '"level":"error"' in line or "Traceback" in line
        ]
        if bad:
            out.append(f"--- {proc.name}: {len(bad)} warning/error lines, last {lines}:")
            out.extend(line[:300] for line in bad[-lines:])
    return "\n".join(out)


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout_s: float, step_s: float = 0.2
) -> bool:
    """Poll an async condition until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if await predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(step_s)


def start_load(
    group: ClientGroup,
    replicas: Sequence[ManagedProcess],
    containers: Sequence[str],
    *,
    pollers_per_container: int = 4,
    streams: bool = True,
    multiplexed: bool = True,
    long_polls: int = 4,
) -> None:
    """The standard mix: pollers on every replica, one stream per container, two multiplexed
    streams, a few long-pollers; spread round robin over ``replicas``."""
    n = len(replicas)
    for i, cid in enumerate(containers):
        for j in range(pollers_per_container):
            group.poller(f"poll-{i}-{j}", replicas[(i + j) % n].url, cid)
        if streams:
            group.sse(f"sse-{i}", replicas[i % n].url, [cid])
    if multiplexed and len(containers) >= 2:
        half = len(containers) // 2
        group.sse("multi-0", replicas[0].url, containers[:half])
        group.sse("multi-1", replicas[-1].url, containers[half:])
    for i, cid in enumerate(containers[:long_polls]):
        group.long_poller(f"long-{i}", replicas[(i + 1) % n].url, cid)
