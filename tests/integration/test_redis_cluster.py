"""Redis Cluster: the store, sharded fan-out and several proxy replicas on a real 3-master cluster.

Real processes: three cluster-enabled redis-servers joined by ``redis-cli --cluster create``, the
simulator, and up to three proxy replicas with ``REDIS_URL=redis+cluster://…``. One cluster for
the module (flushed between tests); the resources of each test spread over all three masters.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import aiohttp
import orjson
import pytest
import redis
from redis.asyncio.cluster import RedisCluster

from proxy.services.cache import SnapshotCache
from proxy.services.subscriber import SnapshotSubscriber
from proxy.settings import SettingsError, load_settings
from proxy.simulator.state import DEFAULT_KEY
from proxy.store import keys
from proxy.store.connect import make_clients
from proxy.store.redis_store import BudgetPolicy, RedisStore
from proxy.testing.processes import ManagedProcess, restart_redis, start_proxy
from tests.conftest import Sim
from tests.integration.helpers import gaps, wait_until
from tests.redis_topologies import Cluster, start_cluster

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def cluster_topology() -> Iterator[Cluster]:
    topology = start_cluster(3)
    yield topology
    topology.stop()


@pytest.fixture
def cluster(cluster_topology: Cluster) -> Iterator[Cluster]:
    """The module's cluster, empty (every master flushed) and healthy."""
    cluster_topology.wait_ok()
    _flush(cluster_topology)
    yield cluster_topology
    _flush(cluster_topology)


def _flush(topology: Cluster) -> None:
    for node in topology.nodes:
        client = redis.Redis(port=node.port, socket_timeout=2)
        try:
            client.flushall()
        except redis.RedisError:
            pass  # a node a test killed; it comes back empty anyway
        finally:
            client.close()


def _env(sim: Sim, topology: Cluster, replica: str, **extra: str) -> dict[str, str]:
    env = {
        "LAYERS_API_KEY": DEFAULT_KEY,
        "LAYERS_API_URL": sim.url,
        "REDIS_URL": topology.url,
        "PROXY_AUTH": "none",
        "PROXY_REPLICA_ID": replica,
        **extra,
    }
    try:
        load_settings(env=env)
    except SettingsError as exc:
        pytest.fail(
            "proxy.settings (validate.py) refuses the cluster URL, so no replica can start: "
            f"{exc}. It must accept redis+cluster:// (proxy.store.connect.cluster_url_problem)."
        )
    return env


@pytest.fixture
def replicas(sim: Sim, cluster: Cluster) -> Iterator[list[ManagedProcess]]:
    """Three proxy replicas (ids r0, r1, r2) on the cluster, stopped after the test."""
    started: list[ManagedProcess] = []
    try:
        for i in range(3):
            # The pilot tier: the cadence, not the shared budget, sets the pace of these tests.
            env = _env(sim, cluster, f"r{i}", PROXY_LEASE_TTL_S="3", LAYERS_RATE_PER_MIN="1200")
            started.append(start_proxy(env, name=f"proxy{i}"))
        yield started
    finally:
        for proc in started:
            proc.stop()
        for proc in started:
            assert "Traceback" not in proc.all_output(), proc.output()


def _spread(sim: Sim, count: int, topology: Cluster, **stages: object) -> list[str]:
    """``count`` new containers whose keys live on every master (round robin if possible)."""
    client = topology.client()
    by_node: dict[str, list[str]] = {}
    try:
        for _ in range(count * 6):
            cid, _ = sim.container([["generating_visuals", 120.0]], **stages)
            by_node.setdefault(_node_of(client, _key_of(cid)), []).append(cid)
            if sum(len(v) for v in by_node.values()) >= count and len(by_node) == 3:
                break
    finally:
        client.close()
    out: list[str] = []
    while len(out) < count:
        for ids in by_node.values():
            if ids and len(out) < count:
                out.append(ids.pop())
    return out


def _node_of_async(client: RedisCluster, resource_key: str) -> str:
    """Like ``_node_of``, from an initialized asyncio cluster client's slot map."""
    node = client.get_node_from_key(keys.channel(resource_key))
    return str(node.name) if node is not None else ""


def _key_of(cid: str) -> str:
    return f"progress:-:{cid}"


def _node_of(client: redis.RedisCluster, resource_key: str) -> str:
    """The master ("host:port") that owns ``resource_key``'s slot."""
    node = client.get_node_from_key(keys.channel(resource_key))  # type: ignore[no-untyped-call]
    return str(node.name)


# -- the store and the subscriber in this process ---------------------------------------------


@dataclass(eq=False)
class _Noted:
    keys: list[str] = field(default_factory=list)

    def notify(self, key: str) -> None:
        self.keys.append(key)


@pytest.fixture
async def two_stores(
    cluster: Cluster,
) -> AsyncIterator[tuple[RedisStore, RedisStore, RedisCluster]]:
    """Replica a's store, replica b's store and b's pub/sub client, all on the cluster."""
    ca, pa = make_clients(cluster.url, timeout_s=1.0)
    cb, pb = make_clients(cluster.url, timeout_s=1.0)
    a, b = (
        RedisStore(c, owner=o, lease_ttl_ms=3000, linger_ms=5000, snapshot_ttl_ms=60_000)
        for c, o in ((ca, "a"), (cb, "b"))
    )
    assert a.cluster and a.sharded
    assert isinstance(pb, RedisCluster)
    yield a, b, pb
    for client in (ca, pa, cb, pb):
        await client.aclose()


async def _write(store: RedisStore, key: str, fence: int, body: bytes) -> int:
    snap, _ = await store.write_data(
        key,
        store.token(fence),
        fence,
        body=body,
        etag=body.decode(),
        status_code=200,
        status="processing",
        stage="s1",
        terminal=False,
        upstream_etag="",
    )
    assert snap is not None
    return snap.version


@pytest.mark.timeout(60)
async def test_store_scripts_and_sharded_fanout_on_a_real_cluster(
    cluster: Cluster, two_stores: tuple[RedisStore, RedisStore, RedisCluster]
) -> None:
    """Leases, the three-step claim, fenced writes, SPUBLISH fan-out and pokes, on 3 masters;
    scripts a node lost are reloaded; a broken node reader resubscribes and re-reads."""
    a, b, pubsub = two_stores
    names = [f"progress:-:cnt_{i:02d}" for i in range(12)]
    client = cluster.client()
    try:
        assert len({_node_of(client, k) for k in names}) == 3
        client.script_flush()  # every master: the scripts must be loaded again
    finally:
        client.close()
    taken = await a.touch_many([(k, True, -1) for k in names])
    fences = {t.key: t.fence for t in taken}
    assert all(fences.values())
    assert {t.holder for t in await b.touch_many([(k, True, -1) for k in names])} == {
        f"a:{fences[k]}" for k in names
    }

    cache = SnapshotCache()
    noted = _Noted()
    pokes: list[str] = []
    sub = SnapshotSubscriber(pubsub_redis=pubsub, store=b, cache=cache, on_poke=pokes.append)
    tasks = [
        asyncio.create_task(sub.listen_forever()),
        asyncio.create_task(sub.refresh_forever()),
        asyncio.create_task(b.probe_forever()),  # as the app runs it: notices Redis is back
    ]
    try:
        async with asyncio.timeout(5):
            await sub.connected.wait()
        for k in names:
            sub.want(k)
            cache.listen(k, noted)
        assert await wait_until(lambda: sub.subscribed_keys() == set(names), timeout_s=3)

        # The claim: ok, then the floor; another replica's token is refused.
        for k in names:
            first = await a.claim(k, a.token(fences[k]), gap_ms=1000, require_watch=True)
            assert first.verdict == "ok", first
            again = await a.claim(k, a.token(fences[k]), gap_ms=1000, require_watch=True)
            assert again.verdict == "wait" and 900 <= again.ms <= 1000, again
            assert (await b.claim(k, b.token(fences[k]), gap_ms=0, require_watch=True)).verdict == (
                "lost"
            )
        # A write on each master reaches b's cache through SPUBLISH (b holds no lease).
        versions = {k: await _write(a, k, fences[k], b'{"v":1}') for k in names}
        assert await wait_until(
            lambda: all((s := cache.get(k)) and s.version == versions[k] for k in names),
            timeout_s=3,
        )
        # Fencing still holds: b cannot write; a paused old holder cannot either.
        refused, _ = await b.write_data(
            names[0],
            b.token(fences[names[0]]),
            fences[names[0]],
            body=b"x",
            etag="x",
            status_code=200,
            status="processing",
            stage="s1",
            terminal=False,
            upstream_etag="",
        )
        assert refused is None
        # Pokes ride the same shard channel.
        await a.poke(names[1])
        assert await wait_until(lambda: pokes == [names[1]], timeout_s=3)

        # Every SSUBSCRIBE connection is killed by its node: the subscriber rebuilds its readers
        # and re-reads, so a write made meanwhile still arrives (by message or by the re-read).
        lost_before = sub.node_failures
        client = cluster.client()
        try:
            client.execute_command(  # type: ignore[no-untyped-call]
                "CLIENT", "KILL", "TYPE", "pubsub", target_nodes=redis.RedisCluster.ALL_NODES
            )
        finally:
            client.close()
        later = {k: await _write(a, k, fences[k], b'{"v":2}') for k in names}
        assert await wait_until(lambda: sub.node_failures >= lost_before + 3, timeout_s=3)
        assert await wait_until(
            lambda: all((s := cache.get(k)) and s.version == later[k] for k in names),
            timeout_s=5,
        )
        assert await wait_until(lambda: sub.subscribed_keys() == set(names), timeout_s=3)
        third = {k: await _write(a, k, fences[k], b'{"v":3}') for k in names}
        assert await wait_until(
            lambda: all((s := cache.get(k)) and s.version == third[k] for k in names),
            timeout_s=3,
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.timeout(60)
async def test_budget_refusal_spends_nothing_on_a_cluster(
    two_stores: tuple[RedisStore, RedisStore, RedisCluster],
) -> None:
    """The budget step lives in the {lp-global} slot: a refusal by the tenant's bucket leaves
    the shared bucket untouched, a refusal by the shared one leaves the tenant's untouched."""
    a, _, _ = two_stores
    shared = BudgetPolicy.per_minute(6, burst=2)
    a.budget = shared
    tenant = BudgetPolicy(interval_ms=60_000, burst_ms=0)  # one request, then refused
    names = [f"progress:-:cnt_b{i}" for i in range(4)]
    fences = {t.key: t.fence for t in await a.touch_many([(k, True, -1) for k in names])}

    async def claim(k: str, who: str, policy: BudgetPolicy) -> str:
        c = await a.claim(
            k, a.token(fences[k]), gap_ms=0, require_watch=True, tenant=who, tenant_budget=policy
        )
        return c.verdict

    assert await claim(names[0], "acme", tenant) == "ok"
    assert await claim(names[1], "acme", tenant) == "budget"  # the tenant's bucket says no
    # ...and spent nothing from the shared bucket: its burst of 2 still has one left.
    assert await claim(names[2], "other", BudgetPolicy()) == "ok"
    assert await claim(names[3], "other", BudgetPolicy()) == "budget"  # now the shared one
    # A cooldown set on any replica stops the claim too (same slot).
    await a.extend_cooldown(5000)
    assert await claim(names[0], "x", BudgetPolicy()) == "cooldown"


# -- proxy replicas -----------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_cold_burst_over_three_replicas_is_one_request_per_container(
    sim: Sim, cluster: Cluster, replicas: list[ManagedProcess]
) -> None:
    """300 concurrent first requests for 3 containers (one per master) over 3 replicas: exactly
    one upstream request per container, every client gets a 200, and the replicas that did not
    fetch answer as soon as the one that did (the write reaches their waiting requests through
    the shard channel they subscribed to when the request came, not a later re-read)."""
    containers = _spread(sim, 3, cluster)
    slowest = [0.0, 0.0, 0.0]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(i: int) -> int:
            cid = containers[i % len(containers)]
            replica = (i // len(containers)) % 3
            url = f"{replicas[replica].url}/v1/content/{cid}/progress"
            started = time.monotonic()
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=20)) as resp:
                await resp.read()
                slowest[replica] = max(slowest[replica], time.monotonic() - started)
                return resp.status

        statuses = await asyncio.gather(*(one(i) for i in range(300)))
    assert set(statuses) == {200}, statuses
    for cid in containers:
        assert len(sim.requests(cid)) == 1, sim.requests(cid)
    # Waiting for a re-read instead would add a poll step (lease / 3 = 1 s here) on two replicas.
    assert max(slowest) - min(slowest) < 0.6, slowest


@dataclass
class _Seen:
    rows: list[tuple[float, int, float | None]] = field(default_factory=list)


async def _poll(
    session: aiohttp.ClientSession, url: str, seen: _Seen, stop: asyncio.Event, every_s: float
) -> None:
    while not stop.is_set():
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                raw = await resp.read()
                progress = None
                if resp.status == 200:
                    progress = float(orjson.loads(raw)["stageProgress"])
                seen.rows.append((time.monotonic(), resp.status, progress))
        except (aiohttp.ClientError, TimeoutError):
            seen.rows.append((time.monotonic(), 0, None))
        await asyncio.sleep(every_s)


@pytest.mark.timeout(60)
async def test_floor_cadence_and_fanout_across_nodes(
    sim: Sim, cluster: Cluster, replicas: list[ManagedProcess]
) -> None:
    """Six containers (two per master) polled on every replica for 15 s: never two upstream
    requests < 0.95 s apart, about one per 2 s, and every client sees progress advance, also
    on the replicas that do not hold the lease (the fan-out crosses nodes)."""
    containers = _spread(sim, 6, cluster)
    stop = asyncio.Event()
    seen: dict[tuple[int, str], _Seen] = {}
    async with aiohttp.ClientSession() as session:
        tasks = []
        for i, proxy in enumerate(replicas):
            for cid in containers:
                seen[(i, cid)] = _Seen()
                url = f"{proxy.url}/v1/content/{cid}/progress"
                tasks.append(
                    asyncio.create_task(_poll(session, url, seen[(i, cid)], stop, every_s=0.4))
                )
        started = time.monotonic()
        await asyncio.sleep(15)  # the observation window: counts and cadence are judged over it
        stop.set()
        await asyncio.gather(*tasks)
        duration = time.monotonic() - started
    holders = _holders(cluster, containers)
    assert set(holders.values()) <= {"r0", "r1", "r2"}, holders
    for cid in containers:
        times = [r["t_mono"] for r in sim.requests(cid) if r["kind"] == "progress"]
        assert min(gaps(times)) >= 0.95, gaps(times)
        # About one per 2 s: the cold fetch, then the cadence (no stage change in 15 s).
        assert duration / 2 - 2 <= len(times) <= duration / 2 + 2, (cid, len(times), duration)
    for (i, cid), client in seen.items():
        statuses = [s for _, s, _ in client.rows]
        assert set(statuses) == {200}, (i, cid, statuses)
        progress = [p for _, _, p in client.rows if p is not None]
        assert progress == sorted(progress), (i, cid, progress)
        # Fresh data everywhere: at least 5 distinct values in 15 s at one poll per 2 s.
        assert len(set(progress)) >= 5, (i, cid, holders.get(cid), sorted(set(progress)))


def _holders(topology: Cluster, containers: list[str]) -> dict[str, str]:
    client = topology.client()
    try:
        out = {}
        for cid in containers:
            value = client.get(keys.lease(_key_of(cid)))
            if isinstance(value, bytes):
                out[cid] = value.decode().rpartition(":")[0]
        return out
    finally:
        client.close()


@pytest.mark.timeout(60)
async def test_killed_lease_holder_is_replaced(
    sim: Sim, cluster: Cluster, replicas: list[ManagedProcess]
) -> None:
    """SIGKILL the replica holding the leases: another takes over within a few seconds (lease
    3 s), the floor holds across the takeover, and no client sees progress go backwards."""
    containers = _spread(sim, 3, cluster)
    stop = asyncio.Event()
    seen: dict[tuple[int, str], _Seen] = {}
    async with aiohttp.ClientSession() as session:
        # Replica 0 fetches them cold, so it holds every lease.
        for cid in containers:
            async with session.get(f"{replicas[0].url}/v1/content/{cid}/progress") as resp:
                assert resp.status == 200
        assert set(_holders(cluster, containers).values()) == {"r0"}
        tasks = []
        for i in (1, 2):
            for cid in containers:
                seen[(i, cid)] = _Seen()
                url = f"{replicas[i].url}/v1/content/{cid}/progress"
                tasks.append(
                    asyncio.create_task(_poll(session, url, seen[(i, cid)], stop, every_s=0.3))
                )
        await asyncio.sleep(4)  # a baseline: r1 and r2 watch, r0 polls
        killed_at = time.monotonic()
        replicas[0].kill()

        def taken_over() -> bool:
            """Three upstream polls after the kill for each container (the takeover, then the
            cadence), and every client has data from 6 s after the kill on."""
            polled = all(
                sum(r["kind"] == "progress" and r["t_mono"] > killed_at for r in sim.requests(cid))
                >= 3
                for cid in containers
            )
            return polled and all(
                any(p is not None and t > killed_at + 6 for t, _, p in c.rows)
                for c in seen.values()
            )

        await wait_until(taken_over, 20, 0.25)  # what is missing, if anything, is told below
        stop.set()
        await asyncio.gather(*tasks)
    after_holders = _holders(cluster, containers)
    assert after_holders and set(after_holders.values()) <= {"r1", "r2"}, after_holders
    for cid in containers:
        times = [r["t_mono"] for r in sim.requests(cid) if r["kind"] == "progress"]
        before = [t for t in times if t < killed_at]
        after = [t for t in times if t > killed_at]
        assert before and after, (cid, times, killed_at)
        # The lease (3 s) lapses, the next interest flush (1 s) takes it, the poll follows.
        assert after[0] - before[-1] <= 3.0 + 1.0 + 2.0 + 0.5, (before, after)
        assert min(gaps(times)) >= 0.95, gaps(times)
        # After the takeover, the 2 s cadence again.
        assert len(after) >= 3 and max(gaps(after)) <= 2.0 + 1.0, (after, killed_at)
    for (i, cid), client in seen.items():
        statuses = [s for _, s, _ in client.rows]
        assert set(statuses) == {200}, (i, cid, statuses)
        progress = [p for _, _, p in client.rows if p is not None]
        assert progress == sorted(progress), (i, cid, progress)  # never backwards
        late = {p for t, _, p in client.rows if p is not None and t > killed_at + 6}
        early = {p for t, _, p in client.rows if p is not None and t < killed_at}
        assert late and max(late) > max(early), (i, cid)  # fresh data after the takeover


@pytest.mark.timeout(60)
async def test_a_restarted_master_is_resubscribed(
    cluster: Cluster, two_stores: tuple[RedisStore, RedisStore, RedisCluster]
) -> None:
    """SIGKILL one master and start it again (empty, same slots): the subscriber's reader for
    that node is rebuilt, and writes on it reach the cache again (versions stay newer)."""
    a, b, pubsub = two_stores
    victim = cluster.nodes[1]
    client = cluster.client()
    try:
        names = [
            k
            for k in (f"progress:-:cnt_r{i:02d}" for i in range(40))
            if _node_of(client, k) == f"127.0.0.1:{victim.port}"
        ][:3]
    finally:
        client.close()
    assert names
    cache = SnapshotCache()
    noted = _Noted()
    sub = SnapshotSubscriber(pubsub_redis=pubsub, store=b, cache=cache)
    tasks = [
        asyncio.create_task(sub.listen_forever()),
        asyncio.create_task(sub.refresh_forever()),
        asyncio.create_task(b.probe_forever()),  # as the app runs it: notices Redis is back
    ]
    try:
        async with asyncio.timeout(5):
            await sub.connected.wait()
        fences = {t.key: t.fence for t in await a.touch_many([(k, True, -1) for k in names])}
        for k in names:
            sub.want(k)
            cache.listen(k, noted)
        assert await wait_until(lambda: sub.subscribed_keys() == set(names), timeout_s=3)
        before = {k: await _write(a, k, fences[k], b"one") for k in names}
        assert await wait_until(
            lambda: all((s := cache.get(k)) and s.version == before[k] for k in names), 3
        )
        others = [
            k
            for k in (f"progress:-:cnt_o{i:02d}" for i in range(40))
            if k not in names and _node_of_async(pubsub, k) != f"127.0.0.1:{victim.port}"
        ][:3]
        for k in names + others:
            await a.memory_age_ms(k)  # each master's marker exists from now on
        # The markers age past 1 s on Redis's clock (no clock to inject into Redis): the
        # ones that survive the restart must read older than 1000 ms below.
        await asyncio.sleep(1.1)
        victim.kill()
        assert await wait_until(lambda: sub.node_failures >= 1, timeout_s=5)
        cluster.nodes[1] = victim = await asyncio.to_thread(restart_redis, victim)
        await asyncio.to_thread(cluster.wait_ok)
        # The node came back empty: a's lease is gone; a new fence, a new (newer) version.
        assert await wait_until(lambda: sub.subscribed_keys() == set(names), timeout_s=10)
        fresh = {
            t.key: t.fence
            for t in await _retry(a, lambda: a.touch_many([(k, True, -1) for k in names]))
        }
        assert all(fresh[k] > fences[k] for k in names)
        # The restarted master forgot when its resources were polled, and says so; the others
        # did not forget (the floor waits only where it must).
        forgot = [await a.memory_age_ms(k) for k in names]
        kept = [await a.memory_age_ms(k) for k in others]
        assert max(forgot) < 1000 < min(kept), (forgot, kept)
        after = {k: await _write(a, k, fresh[k], b"two") for k in names}
        assert all(after[k] > before[k] for k in names)
        assert await wait_until(
            lambda: all((s := cache.get(k)) and s.version == after[k] for k in names), 5
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _retry(store: RedisStore, op, attempts: int = 20):  # type: ignore[no-untyped-def]
    """The commands client finds the restarted node after a topology refresh or two (the
    probe, a ping, is what marks the store up again, as ``probe_forever`` does)."""
    for i in range(attempts):
        try:
            await store.ping()
            return await op()
        except redis.RedisError:
            if i == attempts - 1:
                raise
            await asyncio.sleep(0.25)
    return None
