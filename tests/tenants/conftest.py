"""Tenant fixtures: a tenant config, tokens, and a token-mode cluster of real processes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from proxy.simulator.state import DEFAULT_KEY
from proxy.tenancy.tokens import mint_token
from proxy.testing.processes import ManagedProcess, start_proxy, write_config
from tests.conftest import Sim

ACME_SECRET = "acme-secret-" + "A" * 40
GLOBEX_SECRET = "globex-secret-" + "G" * 40
ACME_ORIGIN = "https://app.acme.example"
GLOBEX_ORIGIN = "https://globex.example"


def tenants_toml(**acme: Any) -> str:
    """Two tenants; keyword arguments override acme's limits."""
    limits = {"requests_per_second": 1000, "max_streams": 50, "max_watched": 100, **acme}
    acme_limits = "\n".join(f"{k} = {v}" for k, v in limits.items())
    return f"""
[[tenants]]
id = "acme"
secrets = ["{ACME_SECRET}"]
allowed_origins = ["{ACME_ORIGIN}"]
{acme_limits}

[[tenants]]
id = "globex"
secrets = [{{ kid = "g1", secret = "{GLOBEX_SECRET}" }}]
allowed_origins = ["{GLOBEX_ORIGIN}"]
"""


def acme_token(*containers: str, jobs: tuple[str, ...] = (), ttl_s: int = 600) -> str:
    """A valid acme token naming ``containers`` and ``jobs``."""
    return mint_token(
        tenant="acme", secret=ACME_SECRET, containers=containers, jobs=jobs, ttl_s=ttl_s
    )


def globex_token(*containers: str) -> str:
    """A valid globex token (kid g1)."""
    return mint_token(tenant="globex", secret=GLOBEX_SECRET, kid="g1", containers=containers)


@dataclass
class Reply:
    """An HTTP answer, read in full."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    url: str,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> Reply:
    """One request with urllib (any status is returned, not raised)."""
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, headers=all_headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return Reply(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return Reply(err.code, dict(err.headers), err.read())


@dataclass
class Cluster:
    """A simulator, a config file and proxy replicas in token mode."""

    sim: Sim
    config: Path
    env: dict[str, str]
    replicas: list[ManagedProcess]

    def start(self, **env: str) -> ManagedProcess:
        proc = start_proxy({**self.env, **env}, name=f"proxy{len(self.replicas)}")
        self.replicas.append(proc)
        return proc


@pytest.fixture
def cluster_factory(sim: Sim, redis_url: str) -> Iterator[Any]:
    """Build a token-mode cluster with a given config; stops every replica after the test."""
    made: list[Cluster] = []

    def build(config_text: str | None = None, **env: str) -> Cluster:
        config = write_config(config_text or tenants_toml())
        base = {
            "LAYERS_API_KEY": DEFAULT_KEY,
            "LAYERS_API_URL": sim.url,
            "REDIS_URL": redis_url,
            "PROXY_AUTH": "tokens",
            "PROXY_CONFIG": str(config),
            **env,
        }
        cluster = Cluster(sim, config, base, [])
        made.append(cluster)
        return cluster

    yield build
    for cluster in made:
        for proc in cluster.replicas:
            proc.stop()
        cluster.config.unlink(missing_ok=True)
