"""Per-tenant limits and CORS across real replicas sharing one redis-server."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from datetime import datetime
from http.client import HTTPConnection, HTTPResponse
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import redis

from proxy.store import keys
from tests.tenants.conftest import (
    ACME_ORIGIN,
    GLOBEX_ORIGIN,
    acme_token,
    globex_token,
    http,
    tenants_toml,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

LONG_RUNNING = [["generating", 600]]


class Stream:
    """An SSE connection kept open after its first event (or the error it got instead)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        self.conn = HTTPConnection(parts.hostname, parts.port, timeout=15)
        self.conn.request("GET", f"{parts.path}?{parts.query}", headers=headers or {})
        self.resp: HTTPResponse = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = dict(self.resp.getheaders())
        self.body = b""
        if self.status != 200:
            self.body = self.resp.read()
            self.conn.close()
            return
        while not self.resp.readline().startswith(b"data:"):
            pass

    def close(self) -> None:
        self.conn.close()


def wait_until(check: Callable[[], Any], timeout_s: float) -> Any:
    """Poll ``check`` (a real process: no clock to move) until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


async def test_rate_limit_holds_across_two_replicas(cluster_factory: Any) -> None:
    """Two replicas hammered for 3 s admit at most rps + one batch each in any second."""
    rps, batch = 20, 2
    cluster = cluster_factory(tenants_toml(requests_per_second=rps), PROXY_ACCESS_LOG="all")
    replicas = [cluster.start(), cluster.start()]
    cid, _ = cluster.sim.container(stages=LONG_RUNNING)
    headers = {"Authorization": f"Bearer {acme_token(cid)}"}
    admitted = 0
    refusals: list[tuple[str, str]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3.0

    async def hammer(session: aiohttp.ClientSession, base: str) -> None:
        nonlocal admitted
        while loop.time() < deadline:
            async with session.get(f"{base}/v1/content/{cid}/progress", headers=headers) as resp:
                body = await resp.json()
                if resp.status == 200:
                    admitted += 1
                else:
                    assert resp.status == 429, body
                    refusals.append((resp.headers["Retry-After"], body["error"]["message"]))

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(hammer(session, proc.url) for proc in replicas * 4))
    for proc in replicas:
        proc.stop()

    # When each replica admitted a request: its access log line's time minus the handling time
    # (a client's receive times would add the cold fetch and scheduling jitter).
    started = sorted(
        datetime.fromisoformat(entry["timestamp"]).timestamp() - entry["ms"] / 1000
        for proc in replicas
        for line in proc.all_output().splitlines()
        if line.startswith("{")
        and (entry := json.loads(line)).get("event") == "request"
        and entry["status"] == 200
    )
    assert len(started) == admitted
    # Redis grants at most rps permits in any second of its clock, so over the whole run (first
    # to last admission, rounded up to whole windows) the cluster admits at most rps per window
    # plus one unspent batch per replica. Counting the whole run, not the busiest second of log
    # timestamps, keeps the check free of logging jitter under load.
    windows = math.ceil(started[-1] - started[0]) + 1
    assert admitted <= rps * windows + len(replicas) * batch
    assert admitted >= 0.8 * rps * 3  # the limit does not starve the tenant either
    assert len(refusals) > admitted
    retry_after, message = refusals[0]
    assert int(retry_after) >= 1
    assert message.startswith("tenant acme is over its requests_per_second limit (20)")


def test_max_streams_across_replicas_and_a_crash(cluster_factory: Any) -> None:
    """max_streams=2 counts streams on both replicas; closed and crashed ones give slots back."""
    cluster = cluster_factory(tenants_toml(max_streams=2), PROXY_LEASE_TTL_S="3")
    one, two = cluster.start(), cluster.start()
    cid, _ = cluster.sim.container(stages=LONG_RUNNING)
    path = f"/v1/content/{cid}/progress/stream?access_token={acme_token(cid)}"

    first, second = Stream(one.url + path), Stream(two.url + path)
    assert (first.status, second.status) == (200, 200)
    refused = Stream(one.url + path)
    assert refused.status == 429
    error = json.loads(refused.body)["error"]
    assert error["message"].startswith("tenant acme is over its max_streams limit (2)")
    assert error["details"] == {"limit": "max_streams", "value": 2}

    first.close()
    third = wait_until(lambda: (s := Stream(one.url + path)).status == 200 and s, timeout_s=5)
    killed_at = time.monotonic()
    two.kill()  # second's slot is now held by a dead replica
    assert Stream(one.url + path).status == 429
    fourth = wait_until(lambda: (s := Stream(one.url + path)).status == 200 and s, timeout_s=6)
    assert time.monotonic() - killed_at <= 3 + 1.5  # within the slot TTL (lease_ttl_s)
    third.close()
    fourth.close()
    second.close()


def test_max_watched_across_replicas(cluster_factory: Any, redis_url: str) -> None:
    """max_watched=2 counts distinct containers on both replicas; watched ones keep working."""
    flush_s = 0.2
    cluster = cluster_factory(tenants_toml(max_watched=2), PROXY_INTEREST_FLUSH_S=str(flush_s))
    one, two = cluster.start(), cluster.start()
    c1, c2, c3 = (cluster.sim.container(stages=LONG_RUNNING)[0] for _ in range(3))
    token = acme_token(c1, c2, c3)

    def poll(base: str, cid: str) -> Any:
        return http(f"{base}/v1/content/{cid}/progress", token=token)

    assert poll(one.url, c1).status == 200
    assert poll(two.url, c2).status == 200
    store = redis.Redis.from_url(redis_url)
    try:
        wait_until(lambda: store.zcard(keys.PREFIX + "tenant-watched:acme") == 2, timeout_s=5)
    finally:
        store.close()
    time.sleep(3 * flush_s)  # a sync of replica one after replica two's (no clock to move)
    refused = poll(one.url, c3)
    assert refused.status == 429
    error = refused.json()["error"]
    assert error["message"].startswith("tenant acme is over its max_watched limit (2)")
    assert error["details"] == {"limit": "max_watched", "value": 2}
    assert poll(one.url, c1).status == 200
    assert poll(one.url, c2).status == 200  # watched on the other replica: not new
    assert cluster.sim.requests(c3) == []


def test_cors_through_the_proxy(cluster_factory: Any) -> None:
    """Streams, errors and preflights carry CORS headers for the tenant's own origin only."""
    cluster = cluster_factory()
    proxy = cluster.start()
    cid, _ = cluster.sim.container(stages=LONG_RUNNING)
    base = f"{proxy.url}/v1/content/{cid}/progress"

    stream = Stream(f"{base}/stream?access_token={acme_token(cid)}", {"Origin": ACME_ORIGIN})
    stream.close()
    assert stream.status == 200
    assert stream.headers["Access-Control-Allow-Origin"] == ACME_ORIGIN
    assert stream.headers["Vary"] == "Origin"

    unauthenticated = http(base, token="garbage", headers={"Origin": ACME_ORIGIN})
    assert unauthenticated.status == 401
    assert unauthenticated.headers["Access-Control-Allow-Origin"] == ACME_ORIGIN

    cross = http(base, token=globex_token(cid), headers={"Origin": ACME_ORIGIN})
    assert "Access-Control-Allow-Origin" not in cross.headers
    own = http(base, token=globex_token(cid), headers={"Origin": GLOBEX_ORIGIN})
    assert own.status == 200
    assert own.headers["Access-Control-Allow-Origin"] == GLOBEX_ORIGIN

    preflight = http(
        base,
        method="OPTIONS",
        headers={"Origin": ACME_ORIGIN, "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Methods"] == "GET, OPTIONS"
    assert "Access-Control-Allow-Credentials" not in preflight.headers
