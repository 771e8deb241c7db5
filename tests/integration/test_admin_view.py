"""The admin view's feed (/admin/state) against real replicas, Redis and the simulator."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import fakeredis
import pytest
import redis
from aiohttp import web

from proxy.clock import ManualClock
from proxy.metrics import Metrics
from proxy.redaction import Secret
from proxy.resources import PROGRESS, ResourceRef
from proxy.services.cache import SnapshotCache
from proxy.services.census import Census
from proxy.services.interest import InterestTracker
from proxy.services.scheduler import Scheduler
from proxy.services.stats import Stats
from proxy.services.watching import Watching
from proxy.settings import load_settings
from proxy.store import keys as store_keys
from proxy.store.redis_store import RedisStore
from proxy.tenancy.tokens import mint_token
from proxy.testing.processes import ManagedProcess, start_redis, write_config
from proxy.upstream.client import RawResponse, UpstreamClient
from proxy.web import keys
from proxy.web.admin_view import ADMIN_MEMORY, RESOURCE_ROWS_MAX, AdminMemory, build_state
from tests.conftest import ProxyFactory, Sim

pytestmark = [pytest.mark.integration]
T = TypeVar("T")

ADMIN = "admin-" + secrets.token_urlsafe(24)
LONG_STAGE = [["generating_visuals", 300.0]]  # 2 s cadence for the stage's first 30 s
ACME_SECRET = "acme-tenant-secret-" + secrets.token_urlsafe(32)
BETA_SECRET = "beta-tenant-secret-" + secrets.token_urlsafe(32)
TENANTS = "\n".join(
    f'[[tenants]]\nid = "{name}"\nsecrets = ["{secret}"]\nweight = {weight}\n'
    "requests_per_second = 500\n"
    for name, secret, weight in (("acme", ACME_SECRET, 2), ("beta", BETA_SECRET, 1))
)


async def fetch(
    session: aiohttp.ClientSession, url: str, auth: str | None = None
) -> tuple[int, dict[str, str], str]:
    """GET ``url`` (``Authorization: auth`` when given): status, headers, body."""
    async with session.get(url, headers={"Authorization": auth} if auth else {}) as resp:
        return resp.status, dict(resp.headers), await resp.text()


async def feed(session: aiohttp.ClientSession, proxy: ManagedProcess) -> dict[str, Any]:
    """One read of /admin/state with the admin token."""
    status, _, body = await fetch(session, f"{proxy.url}/admin/state", f"Bearer {ADMIN}")
    assert status == 200, body
    data: dict[str, Any] = json.loads(body)
    return data


async def until(read: Callable[[], Awaitable[T]], ok: Callable[[T], bool], timeout_s: float) -> T:
    """Read until ``ok(value)`` holds or the time is up (the last value either way)."""
    end = time.monotonic() + timeout_s
    value = await read()
    while not ok(value) and time.monotonic() < end:
        await asyncio.sleep(0.2)
        value = await read()
    return value


class Watchers:
    """Clients polling URLs every second in the background, counting what they sent."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.sent: dict[str, int] = {}
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Watchers:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def watch(self, url: str, token: str = "", label: str = "-") -> None:
        self.tasks.append(asyncio.create_task(self._poll(url, token, label)))

    async def _poll(self, url: str, token: str, label: str) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        while True:
            self.sent[label] = self.sent.get(label, 0) + 1
            async with self.session.get(url, headers=headers) as resp:
                await resp.read()
            await asyncio.sleep(1.0)


async def cold(
    session: aiohttp.ClientSession, proxy: ManagedProcess, cid: str, token: str = ""
) -> None:
    """One request that makes ``proxy`` fetch ``cid`` (and so take its lease)."""
    url = f"{proxy.url}/v1/content/{cid}/progress"
    status, _, body = await fetch(session, url, f"Bearer {token}" if token else None)
    assert status == 200, body


def held(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The feed's rows whose lease this replica holds, by resource id."""
    return {r["id"]: r for r in state["resources"]["rows"] if r["lease_here"]}


@pytest.mark.timeout(30)
async def test_the_feed_needs_the_admin_token_and_the_page_does_not(
    sim: Sim, proxies: ProxyFactory
) -> None:
    """/admin/state is 401 without the token, with a wrong one, or with none set; /admin is not."""
    proxy, open_proxy = proxies(PROXY_ADMIN_TOKEN=ADMIN), proxies()
    feed_url = f"{proxy.url}/admin/state"
    async with aiohttp.ClientSession() as session:
        refused = [await fetch(session, feed_url, auth) for auth in (None, "Bearer wrong", ADMIN)]
        # With no admin token configured the feed is off, whatever the request carries.
        refused.append(await fetch(session, f"{open_proxy.url}/admin/state", f"Bearer {ADMIN}"))
        status, headers, body = await fetch(session, feed_url, f"Bearer {ADMIN}")
        page_status, page_headers, page = await fetch(session, f"{proxy.url}/admin")
    codes = [(code, json.loads(text)["error"]["code"]) for code, _, text in refused]
    assert codes == [(401, "UNAUTHENTICATED")] * 4
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert headers["Content-Type"].startswith("application/json")
    state = json.loads(body)
    assert page_status == 200 and page_headers["Content-Type"].startswith("text/html")
    assert "frame-ancestors 'none'" in page_headers["Content-Security-Policy"]
    assert state["replica"]["id"] and state["replica"]["id"] not in page  # the page has no data
    assert ADMIN not in page
    assert '<script type="module" src="/static/admin.js">' in page


@pytest.mark.timeout(45)
async def test_leases_cadence_and_budget_agree_with_the_simulator(
    sim: Sim, proxies: ProxyFactory
) -> None:
    """Held leases show a 2 s cadence and a next poll within it; the budget equals the sim log."""
    proxy = proxies(PROXY_ADMIN_TOKEN=ADMIN)
    containers = [sim.container(LONG_STAGE)[0] for _ in range(3)]
    async with aiohttp.ClientSession() as session, Watchers(session) as clients:
        for cid in containers:
            await cold(session, proxy, cid)
            clients.watch(f"{proxy.url}/v1/content/{cid}/progress")

        def settled(state: dict[str, Any]) -> bool:
            rows = held(state)
            return set(rows) == set(containers) and all(
                r["next_poll_in_ms"] is not None and r["cadence_ms"] == 2000 for r in rows.values()
            )

        state = await until(lambda: feed(session, proxy), settled, timeout_s=15)
        rows = held(state)
        assert set(rows) == set(containers), state["resources"]
        for row in rows.values():
            assert row["cadence_ms"] == 2000 and row["kind"] == "progress"
            assert 0 <= row["next_poll_in_ms"] <= 2000, row
            assert row["upstream"] == {"ok": True, "status": 200, "code": "", "message": ""}
            assert row["age_ms"] is not None and row["age_ms"] <= 3000, row
            assert row["fence"] > 0 and row["failures"] == 0
        assert state["resources"]["total"] == state["resources"]["leases_held"] == 3
        assert state["replica"]["pid"] > 0 and state["replica"]["uptime_s"] > 0
        assert state["redis"]["up"] and state["redis"]["address"].startswith("127.0.0.1:")

        # The budget: this replica's upstream GETs in the last minute are what the sim logged.
        # (The replica counts a GET once its answer is in, so wait for a moment between polls.)
        async def counts() -> tuple[int, int, int]:
            before = len(sim.requests())
            used = (await feed(session, proxy))["budget"]["used_last_minute"]
            return before, used, len(sim.requests())

        before, used, after = await until(counts, lambda c: c[0] == c[1] == c[2], timeout_s=15)
        assert before == used == after and used >= 3, (before, used, after)
        budget = (await feed(session, proxy))["budget"]
    assert budget["tier_per_min"] == 120 and budget["cap_per_min"] == pytest.approx(108.0)
    assert budget["cooldown_ms"] == 0
    assert not {"budget", "cooldown"} & set(budget["held_back"])


@pytest.mark.timeout(60)
async def test_each_tenants_share_against_its_fair_share(sim: Sim, proxies: ProxyFactory) -> None:
    """Token mode: acme watches two containers and beta one; shares follow the fair allocation."""
    config = write_config(TENANTS)
    # A budget with no contention: each tenant's fair rate is its demand.
    env = {"PROXY_AUTH": "tokens", "PROXY_CONFIG": str(config), "LAYERS_RATE_PER_MIN": "600"}
    proxy = proxies(PROXY_ADMIN_TOKEN=ADMIN, **env)
    acme_ids = [sim.container(LONG_STAGE)[0] for _ in range(2)]
    beta_ids = [sim.container(LONG_STAGE)[0]]
    acme = mint_token(tenant="acme", secret=ACME_SECRET, containers=acme_ids)
    beta = mint_token(tenant="beta", secret=BETA_SECRET, containers=beta_ids)
    async with aiohttp.ClientSession() as session:
        async with Watchers(session) as clients:
            for ids, token, label in ((acme_ids, acme, "acme"), (beta_ids, beta, "beta")):
                for cid in ids:
                    await cold(session, proxy, cid, token)
                    clients.watch(f"{proxy.url}/v1/content/{cid}/progress", token, label)

            def fair(state: dict[str, Any]) -> bool:
                rows = [t for t in state["tenants"]["rows"] if t["id"] in ("acme", "beta")]
                shares = [(t["upstream_share"], t["fair_share"]) for t in rows]
                return len(rows) == 2 and all(
                    a is not None and b and abs(a - b) <= 0.1 for a, b in shares
                )

            state = await until(lambda: feed(session, proxy), fair, timeout_s=30)
        sent = dict(clients.sent)
        after = await feed(session, proxy)  # the clients have stopped: the counts are final
    rows = {t["id"]: t for t in state["tenants"]["rows"]}
    acme_row, beta_row = rows["acme"], rows["beta"]
    assert acme_row["weight"] == 2 and beta_row["limits"]["requests_per_second"] == 500
    assert acme_row["resources"] == 2 and beta_row["resources"] == 1
    # Demand at the 2 s cadence: 2 × 30/min and 30/min, all granted.
    assert acme_row["fair_per_min"] == pytest.approx(60, abs=1)
    assert beta_row["fair_per_min"] == pytest.approx(30, abs=1)
    assert acme_row["fair_share"] == pytest.approx(2 / 3, abs=0.01)
    for row in (acme_row, beta_row):
        assert abs(row["upstream_share"] - row["fair_share"]) <= 0.1, row
    final = {t["id"]: t for t in after["tenants"]["rows"]}
    # Every client request of the tenant is counted (the cold ones too).
    assert final["acme"]["client_requests"] == sent["acme"] + len(acme_ids)
    assert final["beta"]["client_requests"] == sent["beta"] + len(beta_ids)
    assert state["tenants"]["window_s"] > 0


@pytest.mark.timeout(45)
async def test_two_replicas_each_show_only_their_own_leases(
    sim: Sim, proxies: ProxyFactory, redis_url: str
) -> None:
    """Each feed's held leases are those Redis names it for; together they cover each once."""
    replicas = [proxies(PROXY_ADMIN_TOKEN=ADMIN), proxies(PROXY_ADMIN_TOKEN=ADMIN)]
    containers = [sim.container(LONG_STAGE)[0] for _ in range(6)]
    async with aiohttp.ClientSession() as session, Watchers(session) as clients:
        for i, cid in enumerate(containers):
            await cold(session, replicas[i % 2], cid)  # the replica that fetches first holds it
        for cid in containers:
            for proxy in replicas:
                clients.watch(f"{proxy.url}/v1/content/{cid}/progress")

        async def both() -> list[dict[str, Any]]:
            return [await feed(session, p) for p in replicas]

        def covered(states: list[dict[str, Any]]) -> bool:
            listed = [{r["id"] for r in s["resources"]["rows"]} for s in states]
            leased = sorted(cid for s in states for cid in held(s))
            return leased == sorted(containers) and all(ids == set(containers) for ids in listed)

        states = await until(both, covered, timeout_s=15)
        owners = _lease_owners(redis_url, containers)
    mine = [set(held(s)) for s in states]
    assert mine[0] and mine[1], mine
    assert not mine[0] & mine[1]
    assert mine[0] | mine[1] == set(containers)
    for state, ids in zip(states, mine, strict=True):
        replica = state["replica"]["id"]
        assert ids == {cid for cid, (owner, _) in owners.items() if owner == replica}
        for cid in ids:
            assert held(state)[cid]["fence"] == owners[cid][1]
        others = [r for r in state["resources"]["rows"] if not r["lease_here"]]
        assert {r["id"] for r in others} == set(containers) - ids  # polled by the other one
        assert all(r["next_poll_in_ms"] is None for r in others)
    assert states[0]["replica"]["id"] != states[1]["replica"]["id"]


def _lease_owners(redis_url: str, containers: list[str]) -> dict[str, tuple[str, int]]:
    """Who Redis says holds each container's lease: (replica id, fence)."""
    with redis.Redis.from_url(redis_url) as client:
        values = [client.get(store_keys.lease(ResourceRef(PROGRESS, c).key)) for c in containers]
    holders = [v.decode().rsplit(":", 1) for v in values]  # "<replica id>:<fence>"
    return {
        cid: (owner, int(fence)) for cid, (owner, fence) in zip(containers, holders, strict=True)
    }


@pytest.mark.timeout(45)
async def test_a_429_shows_as_the_cooldown_left(sim: Sim, proxies: ProxyFactory) -> None:
    """After an upstream 429 the feed shows the cooldown left and the failed poll's code."""
    proxy = proxies(PROXY_ADMIN_TOKEN=ADMIN)
    cid, _ = sim.container(LONG_STAGE)
    async with aiohttp.ClientSession() as session, Watchers(session) as clients:
        await cold(session, proxy, cid)
        clients.watch(f"{proxy.url}/v1/content/{cid}/progress")
        sim.fault(kind="rate_limit", retry_after_s=20, count=1)

        def cooling(state: dict[str, Any]) -> bool:
            row = held(state).get(cid)
            return bool(state["budget"]["cooldown_ms"]) and bool(row and row["upstream"]["code"])

        state = await until(lambda: feed(session, proxy), cooling, timeout_s=15)
    assert 0 < state["budget"]["cooldown_ms"] <= 20_000, state["budget"]
    # A poll tried during the cooldown is held back by it, and by nothing else.
    assert set(state["budget"]["held_back"]) <= {"cooldown"}
    row = held(state)[cid]
    assert row["held_back"] in (None, "cooldown")
    assert row["upstream"]["ok"] is False and row["upstream"]["code"] == "UPSTREAM_RATE_LIMITED"
    assert row["upstream"]["status"] == 503 and "429" in row["upstream"]["message"]


@pytest.mark.timeout(45)
async def test_redis_down_is_shown_and_the_password_never_is(
    sim: Sim, proxies: ProxyFactory
) -> None:
    """The feed names Redis by address only, and keeps answering (Redis down) when it stops."""
    password = "pw-" + secrets.token_urlsafe(16)
    own = start_redis(password=password)
    try:
        proxy = proxies(
            PROXY_ADMIN_TOKEN=ADMIN, REDIS_URL=f"redis://:{password}@127.0.0.1:{own.port}/0"
        )
        cid, _ = sim.container(LONG_STAGE)
        async with aiohttp.ClientSession() as session, Watchers(session) as clients:
            await cold(session, proxy, cid)
            clients.watch(f"{proxy.url}/v1/content/{cid}/progress")
            up = await feed(session, proxy)
            own.stop()
            down = await until(lambda: feed(session, proxy), lambda s: not s["redis"]["up"], 15)
            _, _, raw = await fetch(session, f"{proxy.url}/admin/state", f"Bearer {ADMIN}")
    finally:
        own.stop()
    assert up["redis"] | {"since_s": 0} == {
        **{"address": f"127.0.0.1:{own.port}/0", "embedded": False, "up": True, "checked": True},
        **{"since_s": 0, "last_error": "", "errors": 0},
    }
    assert not down["redis"]["up"] and down["redis"]["last_error"], down["redis"]
    assert down["redis"]["errors"] >= 1
    assert down["budget"]["cooldown_ms"] is None  # unknown while Redis does not answer
    assert cid in held(down)  # memory still knows what it polls
    assert password not in raw and password not in str(up)


@pytest.mark.timeout(30)
async def test_ten_thousand_resources_answer_fast_with_the_soonest_500() -> None:
    """With 10,000 leases the feed lists the 500 due soonest, in order, with the total."""
    app, clock = _view_app()
    scheduler, start = app[keys.SCHEDULER], clock.mono
    ids = [f"cnt_{i:08d}-0000-4000-8000-000000000000" for i in range(10_000)]
    for i in reversed(range(len(ids))):  # adopted last first: the order is the feed's work
        clock.mono = start + i / 1000  # ids[i] is due i ms after ``start``
        scheduler.leases.adopt(ResourceRef(PROGRESS, ids[i]), fence=i + 1)
    clock.mono = start
    began = time.perf_counter()
    state = await build_state(app)
    took_s = time.perf_counter() - began
    resources = state["resources"]
    assert resources["total"] == resources["leases_held"] == 10_000
    assert resources["shown"] == len(resources["rows"]) == RESOURCE_ROWS_MAX
    assert [r["id"] for r in resources["rows"]] == ids[:RESOURCE_ROWS_MAX]
    assert [r["next_poll_in_ms"] for r in resources["rows"]] == list(range(RESOURCE_ROWS_MAX))
    assert took_s < 0.5, took_s


class NoUpstream:
    """A transport the test never reaches (nothing is polled)."""

    async def get(self, url: str, headers: Any, timeout_s: float) -> RawResponse:
        raise AssertionError("no upstream request expected")

    async def close(self) -> None:
        return None


def _view_app() -> tuple[web.Application, ManualClock]:
    """A bare application holding just the services the view reads (fakeredis, no upstream)."""
    settings = load_settings(
        {"LAYERS_API_KEY": "k", "PROXY_AUTH": "none", "REDIS_URL": "memory://"}
    )
    clock, cache, stats = ManualClock(), SnapshotCache(), Stats()
    ttls = {"lease_ttl_ms": 60_000, "linger_ms": 60_000, "snapshot_ttl_ms": 60_000}
    store = RedisStore(fakeredis.FakeAsyncRedis(), owner="r1", **ttls)
    upstream = UpstreamClient(
        base_url="http://layers.test",
        api_key=Secret("k"),
        transport=NoUpstream(),
        timeout_s=5,
        wall_clock=clock.wall,
    )
    common: dict[str, Any] = {"store": store, "cache": cache, "settings": settings, "clock": clock}
    scheduler = Scheduler(upstream=upstream, stats=stats, **common)
    interest = InterestTracker(leases=scheduler.leases, **common)
    app = web.Application()
    app[keys.SETTINGS], app[keys.CLOCK], app[keys.STATS] = settings, clock, stats
    app[keys.STORE], app[keys.SCHEDULER], app[keys.METRICS] = store, scheduler, Metrics()
    app[keys.WATCHING] = Watching(scheduler=scheduler, interest=interest, stats=stats, **common)
    app[keys.CENSUS] = Census(store=store, settings=settings, clock=clock)
    app[ADMIN_MEMORY] = AdminMemory(started_at=clock.monotonic())
    return app, clock
