"""Shared fixtures: real redis-server, the simulator and proxy replicas as processes."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from proxy.simulator.state import DEFAULT_KEY
from proxy.testing.processes import ManagedProcess, start_proxy, start_redis, start_simulator


@pytest.fixture(scope="session")
def redis_proc() -> Iterator[ManagedProcess]:
    """One private redis-server for the session (tests use their own DB or flush it)."""
    proc = start_redis()
    yield proc
    proc.stop()


class Sim:
    """A simulator process plus its control API."""

    def __init__(self, proc: ManagedProcess) -> None:
        self.proc = proc
        self.url = proc.url

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return json.loads(raw) if raw else None

    def container(self, stages: list[list[Any]] | None = None, **extra: Any) -> tuple[str, str]:
        """Create a container; returns (containerId, jobId)."""
        body: dict[str, Any] = {"queued_s": 0, **extra}
        if stages is not None:
            body["stages"] = stages
        made = self.call("POST", "/_sim/containers", body)
        return made["containerId"], made["jobId"]

    def requests(self, resource_id: str | None = None) -> list[dict[str, Any]]:
        """What reached "Layers", optionally for one resource."""
        q = f"?resource_id={resource_id}" if resource_id else ""
        return list(self.call("GET", "/_sim/requests" + q)["requests"])

    def fault(self, **rule: Any) -> None:
        self.call("POST", "/_sim/faults", rule)

    def clear_faults(self) -> None:
        self.call("DELETE", "/_sim/faults")


@pytest.fixture
def sim() -> Iterator[Sim]:
    """A fresh simulator process (generous budget so tests measure the proxy, not the budget)."""
    proc = start_simulator(args=["--rate-per-min", "100000"])
    yield Sim(proc)
    proc.stop()


@pytest.fixture
def redis_url(redis_proc: ManagedProcess) -> Iterator[str]:
    """A clean database on the session's redis-server."""
    url = f"redis://127.0.0.1:{redis_proc.port}/0"
    _flush(redis_proc.port)
    yield url
    _flush(redis_proc.port)


def _flush(port: int) -> None:
    import redis

    from proxy.store import keys

    client = redis.Redis(port=port)
    client.flushall()
    # A clean database for each test, but not one that "just forgot everything": otherwise each
    # test's first poll would wait out the floor (tests/chaos covers the forgetting itself).
    client.set(keys.MEMORY_SINCE, 0)
    client.close()


ProxyFactory = Callable[..., ManagedProcess]


@pytest.fixture
def proxies(sim: Sim, redis_url: str) -> Iterator[ProxyFactory]:
    """Start proxy replicas against the simulator and the test's Redis; stops them all after."""
    started: list[ManagedProcess] = []

    def start(**env: str) -> ManagedProcess:
        full = {
            "LAYERS_API_KEY": DEFAULT_KEY,
            "LAYERS_API_URL": sim.url,
            "REDIS_URL": redis_url,
            "PROXY_AUTH": "none",
            "PROXY_LOG_LEVEL": "info",
            **env,
        }
        proc = start_proxy(full, name=f"proxy{len(started)}")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
