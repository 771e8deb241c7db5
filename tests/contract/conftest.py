"""The contract suite's live servers, seeded with known resources: an open-mode proxy
(``live``) and a token-mode one (``live_tokens``), each with its own simulator and Redis db."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from proxy.simulator.state import DEFAULT_KEY
from proxy.tenancy.tokens import mint_token
from proxy.testing.processes import ManagedProcess, start_proxy, start_simulator, write_config

ADMIN_TOKEN = "contract-admin-token-0123456789abcdef"
WEBHOOK_SECRET = "contract-webhook-secret-0123456789abcdef"
# The token-mode proxy's one tenant (limits far above what the suite sends).
TENANT = "contract"
TENANT_SECRET = "contract-tenant-secret-0123456789abcdefghijklmnopqrstuvwxyz"
TENANT_TOML = f"""
[[tenants]]
id = "{TENANT}"
secrets = ["{TENANT_SECRET}"]
allowed_origins = ["https://app.contract.example"]
requests_per_second = 100000
max_streams = 1000
max_watched = 100000
"""
# Long enough to outlast the suite: the running resources never end while it reads them.
RUNNING_STAGES = [["generating_visuals", 3600]]
# Container ids are ours to choose (both accepted forms); the simulator picks the job ids.
CONTAINERS = {
    "completed": "cnt_c0ffee00-0000-4000-8000-000000000001",
    "failed": "cnt_c0ffee00-0000-4000-8000-000000000002",
    "canceled": "cnt_01J0C0FFEE0000000000000003",
    "running": "cnt_c0ffee00-0000-4000-8000-000000000004",
}
# Every seeded container belongs to this project (the project routes' example).
PROJECT = "prj_c0ffee00-0000-4000-8000-00000000000a"


@dataclass
class Live:
    """The processes and the resources seeded in the simulator, by what state they are in."""

    proxy: ManagedProcess
    sim: ManagedProcess
    containers: dict[str, str] = field(default_factory=dict)  # state -> containerId
    jobs: dict[str, str] = field(default_factory=dict)  # state -> jobId
    token: str = ""  # token mode: a valid token naming every seeded container and job
    project_token: str = ""  # token mode: a valid token naming the seeded project

    @property
    def url(self) -> str:
        return self.proxy.url

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
        """GET from the proxy: status, headers, body (errors are answers, not exceptions)."""
        req = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.headers, exc.read()

    def sim_call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call the simulator's control API."""
        req = urllib.request.Request(
            self.sim.url + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return json.loads(raw) if raw else None


def _seed(live: Live) -> None:
    # Ended runs start in the past, so they are terminal from the first request.
    scripts: dict[str, dict[str, Any]] = {
        "completed": {"start_offset_s": -600},
        "failed": {"ending": "failed", "start_offset_s": -600},
        "canceled": {"ending": "canceled", "start_offset_s": -600},
        "running": {"stages": RUNNING_STAGES},
    }
    for state, script in scripts.items():
        body = {"id": CONTAINERS[state], "projectId": PROJECT, "queued_s": 0, **script}
        made = live.sim_call("POST", "/_sim/containers", body)
        live.containers[state] = made["containerId"]
        live.jobs[state] = made["jobId"]


def _start_live(redis_proc: ManagedProcess, db: int, name: str, **extra: str) -> Live:
    """A fresh simulator and a proxy on Redis database ``db`` (flushed), seeded."""
    client = redis.Redis(port=redis_proc.port, db=db)
    client.flushdb()
    client.close()
    sim = start_simulator(args=["--rate-per-min", "1000000", "--seed", "9"])
    env = {
        "LAYERS_API_KEY": DEFAULT_KEY,
        "LAYERS_API_URL": sim.url,
        "REDIS_URL": f"redis://127.0.0.1:{redis_proc.port}/{db}",
        "PROXY_AUTH": "none",
        "PROXY_LOG_LEVEL": "warning",
        "PROXY_RATE_PER_MIN": "1000000",  # thousands of random ids: the budget is not on trial
        "PROXY_LONG_POLL_MAX_S": "1",  # `If-None-Match: *` + `Prefer: wait` must not stall it
        "PROXY_SSE_HEARTBEAT_S": "0.5",
        "PROXY_ADMIN_TOKEN": ADMIN_TOKEN,
        "LAYERS_WEBHOOK_SECRET": WEBHOOK_SECRET,
        **extra,
    }
    try:
        proxy = start_proxy(env, name=name)
    except BaseException:
        sim.stop()
        raise
    live = Live(proxy=proxy, sim=sim)
    try:
        _seed(live)
    except BaseException:
        _stop(live)
        raise
    return live


def _stop(live: Live) -> None:
    live.proxy.stop()
    live.sim.stop()


@pytest.fixture(scope="package")
def live(redis_proc: ManagedProcess) -> Iterator[Live]:
    """The simulator and an open-mode proxy with admin token and webhooks on, seeded."""
    live = _start_live(redis_proc, 0, "contract-proxy")
    try:
        yield live
    finally:
        _stop(live)


@pytest.fixture(scope="package")
def live_tokens(redis_proc: ManagedProcess) -> Iterator[Live]:
    """Like ``live``, in token mode (one tenant), with a valid token for every seeded resource."""
    config: Path = write_config(TENANT_TOML)
    try:
        live = _start_live(
            redis_proc, 1, "contract-proxy-tokens", PROXY_AUTH="tokens", PROXY_CONFIG=str(config)
        )
        try:
            live.token = mint_token(
                tenant=TENANT,
                secret=TENANT_SECRET,
                containers=live.containers.values(),
                jobs=live.jobs.values(),
                ttl_s=3600,
            )
            # The project routes need a project token; it would also let every random
            # container id through to an owner lookup upstream, so the rest uses the other.
            live.project_token = mint_token(
                tenant=TENANT, secret=TENANT_SECRET, projects=[PROJECT], ttl_s=3600
            )
            yield live
        finally:
            _stop(live)
    finally:
        config.unlink(missing_ok=True)
