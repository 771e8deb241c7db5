"""The Lua scripts, run against fakeredis (fast) and a real redis-server (truth).

The gate tests also run in the store's cluster mode (``sharded=True``: the claim in three
single-slot steps, writes and pokes on shard channels) on the same backends; the real Redis
Cluster runs are in tests/integration/test_redis_cluster.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import fakeredis
import pytest
from redis.asyncio import Redis

from proxy.store import keys
from proxy.store.connect import (
    RedisUrlError,
    check_redis_url,
    cluster_url_problem,
    is_cluster,
    parse_cluster_url,
    redis_address,
)
from proxy.store.redis_store import BudgetPolicy, RedisStore
from proxy.testing.processes import ManagedProcess

K = "progress:-:cnt_3f2b8c1e-9a4d-4e7b-8c21-0a1b2c3d4e5f"


@pytest.fixture(params=["fakeredis", "redis-server"])
async def redis(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    """Each test runs once per backend."""
    if request.param == "fakeredis":
        client: Redis = fakeredis.FakeAsyncRedis()
    else:
        proc: ManagedProcess = request.getfixturevalue("redis_proc")
        client = Redis(port=proc.port, db=1)
        await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture(params=["single", "sharded"])
def mode(request: pytest.FixtureRequest) -> bool:
    """Whether the store runs its cluster code paths (split claim, shard channels)."""
    return bool(request.param == "sharded")


def make_store(redis: Redis, owner: str, **kw: object) -> RedisStore:
    params: dict[str, object] = {
        "lease_ttl_ms": 2000,
        "linger_ms": 5000,
        "snapshot_ttl_ms": 60_000,
        **kw,
    }
    return RedisStore(redis, owner=owner, **params)  # type: ignore[arg-type]


async def take(store: RedisStore, key: str = K, reval: int = -1) -> int:
    [r] = await store.touch_many([(key, True, reval)])
    return r.fence


async def write(store: RedisStore, fence: int, body: bytes, **kw: object):  # type: ignore[no-untyped-def]
    params: dict[str, object] = {
        "body": body,
        "etag": body.decode(),
        "status_code": 200,
        "status": "processing",
        "stage": "s1",
        "terminal": False,
        "upstream_etag": "",
        **kw,
    }
    return await store.write_data(K, store.token(fence), fence, **params)  # type: ignore[arg-type]


async def test_one_lease_holder_and_monotonic_fences(redis: Redis) -> None:
    """Only one replica holds the lease; each new holder gets a larger fence."""
    a, b = make_store(redis, "a"), make_store(redis, "b", lease_ttl_ms=100)
    first = await take(a)
    assert first > 0
    [r] = await b.touch_many([(K, True, -1)])
    assert r.fence == 0 and r.holder == f"a:{first}"
    await a.release(K, a.token(first))
    second = await take(b)
    assert second > first
    await asyncio.sleep(0.25)  # b's 100 ms lease expires on the Redis clock
    assert await take(a) > second


async def test_claim_enforces_gap_watch_and_lease(redis: Redis, mode: bool) -> None:
    """The gate refuses a second poll inside the gap, an unwatched key and a lost lease."""
    a = make_store(redis, "a", sharded=mode)
    fence = await take(a)
    first = await a.claim(K, a.token(fence), gap_ms=1000, require_watch=True)
    assert first.verdict == "ok"
    second = await a.claim(K, a.token(fence), gap_ms=1000, require_watch=True)
    assert second.verdict == "wait" and 900 <= second.ms <= 1000
    lost = await a.claim(K, a.token(fence + 1), gap_ms=0, require_watch=True)
    assert lost.verdict == "lost"
    await redis.delete(keys.watch(K))
    idle = await a.claim(K, a.token(fence), gap_ms=0, require_watch=True)
    assert idle.verdict == "idle"


async def test_cooldown_blocks_every_replica(redis: Redis, mode: bool) -> None:
    """A cooldown set by one replica stops the others, and is never shortened."""
    a, b = make_store(redis, "a", sharded=mode), make_store(redis, "b", sharded=mode)
    fence = await take(a)
    assert await b.extend_cooldown(5000) > 4000
    assert await b.extend_cooldown(10) > 4000  # not shortened
    verdict = await a.claim(K, a.token(fence), gap_ms=0, require_watch=False)
    assert verdict.verdict == "cooldown" and verdict.ms > 4000


async def test_budget_caps_requests_per_minute(redis: Redis, mode: bool) -> None:
    """The shared GCRA admits the burst, then refuses until time passes."""
    policy = BudgetPolicy.per_minute(6, burst=2)
    a = make_store(redis, "a", budget=policy, sharded=mode)
    verdicts = []
    for i in range(4):
        key = f"{K}-{i}"
        fence = await take(a, key)
        verdicts.append((await a.claim(key, a.token(fence), gap_ms=0, require_watch=False)).verdict)
    assert verdicts[:2] == ["ok", "ok"]
    assert verdicts[2:] == ["budget", "budget"]


async def test_write_is_fenced(redis: Redis, mode: bool) -> None:
    """An old lease holder's write is refused once a newer holder exists."""
    a = make_store(redis, "a", lease_ttl_ms=100, sharded=mode)
    b = make_store(redis, "b", sharded=mode)
    old = await take(a)
    await asyncio.sleep(0.25)  # a's 100 ms lease expires on the Redis clock (none to inject)
    new = await take(b)
    snap, changed = await write(b, new, b'{"v":2}')
    assert snap is not None and changed and snap.version > 0
    refused, _ = await write(a, old, b'{"v":1}')
    assert refused is None
    stored = await b.read(K)
    assert stored is not None and stored.body == b'{"v":2}'


async def test_versions_count_changes_and_stage_clock(redis: Redis) -> None:
    """The version moves only when the body changes; the stage clock only on a stage change."""
    a = make_store(redis, "a")
    fence = await take(a)
    s1, _ = await write(a, fence, b"one", stage="s1")
    await asyncio.sleep(0.02)  # the Redis clock (ms, not injectable) moves between writes
    same, changed = await write(a, fence, b"one", stage="s1")
    assert same is not None and s1 is not None and not changed and same.version == s1.version
    assert same.fetched_ms >= s1.fetched_ms
    await asyncio.sleep(0.02)
    s1b, _ = await write(a, fence, b"two", stage="s1")
    assert s1b is not None and s1b.version > s1.version
    assert s1b.stage_since_ms == s1.stage_since_ms
    s2, _ = await write(a, fence, b"three", stage="s2")
    assert s2 is not None and s2.version > s1b.version and s2.stage_since_ms > s1.stage_since_ms


async def test_version_survives_snapshot_expiry(redis: Redis) -> None:
    """A re-created snapshot continues the version count (replicas ignore older versions)."""
    a = make_store(redis, "a")
    fence = await take(a)
    await write(a, fence, b"one")
    two, _ = await write(a, fence, b"two")
    await redis.delete(keys.snapshot(K))
    again, _ = await write(a, fence, b"three")
    assert two is not None and again is not None and again.version > two.version


def _redis_ms(time_reply: tuple[int, int]) -> int:
    seconds, micros = time_reply
    return int(seconds) * 1000 + int(micros) // 1000


async def test_versions_and_fences_stay_newer_after_redis_forgets_everything(
    redis: Redis,
) -> None:
    """Redis restarted empty (here: FLUSHALL): new versions and fences still beat the old ones.

    Versions and fences never fall below the Redis clock in ms, so a replica's memory (which
    refuses older versions) takes the new history at once, and an old lease holder stays fenced.
    """
    a, b = make_store(redis, "a"), make_store(redis, "b")
    old_fence = await take(a)
    for body in (b"one", b"two", b"three"):
        old, _ = await write(a, old_fence, body)
    assert old is not None
    # Three writes in one millisecond run the counter 2 ahead of the clock; real polls are a
    # second apart. Let the Redis clock pass the last version first (waited on its own clock).
    ahead_ms = old.version - _redis_ms(await redis.time()) + 1
    if ahead_ms > 0:
        await asyncio.sleep(ahead_ms / 1000)
    assert _redis_ms(await redis.time()) > old.version
    await redis.flushall()
    new_fence = await take(b)
    assert new_fence > old_fence
    new, changed = await write(b, new_fence, b"four")
    assert new is not None and changed and new.version > old.version
    refused, _ = await write(a, old_fence, b"stale")
    assert refused is None


async def test_errors_keep_the_last_good_body(redis: Redis) -> None:
    """A failed poll marks the snapshot; the body stays to be served stale."""
    a = make_store(redis, "a")
    fence = await take(a)
    await write(a, fence, b"good")
    snap, _ = await a.write_error(
        K,
        a.token(fence),
        fence,
        error="upstream 503",
        error_status=502,
        error_code="UPSTREAM_UNAVAILABLE",
        error_only_ttl_ms=2000,
    )
    assert snap is not None and snap.body == b"good" and snap.error == "upstream 503"
    healed, _ = await write(a, fence, b"good")
    assert healed is not None and healed.error == "" and healed.version == snap.version


async def test_error_only_record_expires_quickly(redis: Redis) -> None:
    """With nothing cached, a failure is remembered only briefly (the next request retries)."""
    a = make_store(redis, "a")
    fence = await take(a)
    snap, _ = await a.write_error(
        K,
        a.token(fence),
        fence,
        error="timeout",
        error_status=504,
        error_code="UPSTREAM_TIMEOUT",
        error_only_ttl_ms=2000,
    )
    assert snap is not None and not snap.has_body
    assert 0 < await redis.pttl(keys.snapshot(K)) <= 2000


async def test_terminal_snapshot_is_not_polled_again_until_revalidation(redis: Redis) -> None:
    """touch takes no lease for a fresh terminal snapshot; it does once it is old enough."""
    a = make_store(redis, "a")
    fence = await take(a)
    await write(a, fence, b"done", status="completed", terminal=True)
    await a.release(K, a.token(fence))
    assert await take(a, reval=-1) == 0  # jobs: never
    assert await take(a, reval=600_000) == 0  # fresh terminal container
    await asyncio.sleep(0.02)  # the snapshot ages past 10 ms on the Redis clock
    assert await take(a, reval=10) > 0  # older than the revalidation age


async def test_negative_entries_expire(redis: Redis) -> None:
    """A cached 404 lives for the negative TTL only."""
    a = make_store(redis, "a")
    fence = await take(a)
    snap, _ = await write(
        a, fence, b"nf", status_code=404, status="", terminal=True, negative_ttl_ms=1500
    )
    assert snap is not None and snap.expires_ms > snap.fetched_ms
    assert 0 < await redis.pttl(keys.snapshot(K)) <= 1500


async def test_a_budget_refusal_spends_nothing(redis: Redis, mode: bool) -> None:
    """Refused by the tenant's bucket: the shared one is untouched; and the other way round."""
    a = make_store(redis, "a", budget=BudgetPolicy.per_minute(6, burst=2), sharded=mode)
    once = BudgetPolicy(interval_ms=60_000, burst_ms=0)  # one request a minute
    names = [f"{K}-{i}" for i in range(5)]
    fences = {k: await take(a, k) for k in names}

    async def claim(k: str, tenant: str, policy: BudgetPolicy) -> str:
        token = a.token(fences[k])
        got = await a.claim(
            k, token, gap_ms=0, require_watch=True, tenant=tenant, tenant_budget=policy
        )
        return got.verdict

    assert await claim(names[0], "acme", once) == "ok"
    assert await claim(names[1], "acme", once) == "budget"  # acme's bucket refuses...
    assert await claim(names[2], "beta", once) == "ok"  # ...and spent none of the shared burst
    assert await claim(names[3], "gamma", once) == "budget"  # the shared bucket is empty now
    assert await claim(names[4], "gamma", once) == "budget"  # ...and gamma's was not spent:
    assert await redis.get(keys.tenant_budget("gamma")) is None
    assert await redis.get(keys.last_poll(names[3])) is None  # refused: no poll time recorded


async def test_the_claim_records_the_poll_time_on_the_redis_clock(redis: Redis, mode: bool) -> None:
    """An accepted claim returns Redis now and stores it as the last poll (the floor's input)."""
    a = make_store(redis, "a", sharded=mode)
    fence = await take(a)
    got = await a.claim(K, a.token(fence), gap_ms=1000, require_watch=True)
    assert got.verdict == "ok" and got.ms > 1_600_000_000_000
    assert int(await redis.get(keys.last_poll(K)) or 0) == got.ms


async def test_sharded_writes_and_pokes_use_the_resource_channel(
    redis_proc: ManagedProcess,
) -> None:
    """Cluster mode: SPUBLISH "key|version|ms|mode" and pokes on the key's shard channel (the
    channel shares the key's hash tag); one-Redis mode keeps PUBLISH on the one channel."""
    client = Redis(port=redis_proc.port, db=2)
    await client.flushdb()
    listener = Redis(port=redis_proc.port, db=2)
    pubsub = listener.pubsub()
    try:
        await pubsub.ssubscribe(keys.channel(K))
        await pubsub.subscribe(keys.SNAPSHOT_CHANNEL)
        for _ in range(2):
            await pubsub.get_message(timeout=1)
        sharded, single = make_store(client, "a", sharded=True), make_store(client, "b")
        fence = await take(sharded)
        snap, _ = await write(sharded, fence, b"one")
        assert snap is not None
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        assert msg is not None and msg["type"] == "smessage"
        assert msg["data"] == f"{K}|{snap.version}|{snap.fetched_ms}|data".encode()
        await sharded.poke(K)
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        assert msg is not None and msg["data"] == f"{K}|0|0|poke".encode()
        await sharded.release(K, sharded.token(fence))
        fence = await take(single)
        snap, _ = await write(single, fence, b"two")
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        assert msg is not None and msg["type"] == "message"
        assert msg["channel"] == keys.SNAPSHOT_CHANNEL.encode()
        assert "{" + K + "}" in keys.channel(K)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await listener.aclose()
        await client.flushdb()
        await client.aclose()


def test_every_key_of_a_resource_shares_its_hash_tag_and_globals_share_theirs() -> None:
    """The slot layout the cluster scripts rely on."""
    per_resource = [
        keys.lease(K),
        keys.fence(K),
        keys.version(K),
        keys.snapshot(K),
        keys.last_poll(K),
        keys.watch(K),
        keys.channel(K),
    ]
    assert all("{" + K + "}" in name for name in per_resource)
    for name in (keys.COOLDOWN, keys.BUDGET, keys.tenant_budget("acme")):
        assert keys.GLOBAL_TAG in name and name.count("{") == 1
    log = keys.tenant_rate_log("acme")
    assert "{acme}" in log and "{acme}" in log + ":sum"


def test_cluster_urls() -> None:
    """redis+cluster:// parses like redis:// (password, user), lists nodes, refuses a db."""
    target = parse_cluster_url("redis+cluster://:s3cr%40t@h1:7000,h2:7001")
    assert target.nodes == (("h1", 7000), ("h2", 7001))
    assert target.password == "s3cr@t" and target.username is None and not target.tls
    target = parse_cluster_url("rediss+cluster://user:pw@h1:7000/0")
    assert target.username == "user" and target.password == "pw" and target.tls
    assert parse_cluster_url("redis+cluster://pw@[::1]:7000").password == "pw"
    assert parse_cluster_url("redis+cluster://h1").nodes == (("h1", 6379),)
    assert is_cluster("redis+cluster://h:1") and not is_cluster("redis://h:1")
    check_redis_url("redis+cluster://h1:7000,h2:7001")
    for bad in ("redis+cluster://h1:7000/1", "redis+cluster://h1:99999", "redis+cluster://:7000"):
        with pytest.raises(RedisUrlError):
            check_redis_url(bad)
        problem = cluster_url_problem(bad)
        assert problem is not None and "redis+cluster://" in problem
    assert cluster_url_problem("redis+cluster://h1:7000") is None
    shown = redis_address("redis+cluster://:hunter2@h1:7000,h2:7001")
    assert shown == "cluster h1:7000,h2:7001" and "hunter2" not in shown
    with pytest.raises(RedisUrlError) as info:
        check_redis_url("redis+cluster://:hunter2@h1:70000")
    assert "hunter2" not in str(info.value)


def test_slot_helpers_match_redis_cluster() -> None:
    """keys.key_slot is Redis Cluster's hash slot; slot_memory_since(s) lands in slot s."""
    from redis.crc import key_slot

    for name in (keys.lease(K), keys.COOLDOWN, "plain", "a{}b", "{x}y{z}", keys.WATCHED):
        assert keys.key_slot(name) == key_slot(name.encode())
    for slot in (0, 5461, 10923, 16383):
        assert key_slot(keys.slot_memory_since(slot).encode()) == slot


async def test_memory_age_with_a_key_is_the_global_marker_off_cluster(redis: Redis) -> None:
    """On one Redis (even in sharded mode) a resource key changes nothing: one marker."""
    a = make_store(redis, "a", sharded=True)
    assert await a.memory_age_ms(K) == 0  # created now
    await asyncio.sleep(0.05)  # the marker ages on the Redis clock
    assert await a.memory_age_ms(K) >= 40
    assert abs(await a.memory_age_ms() - await a.memory_age_ms(K)) <= 5


async def test_touch_tells_its_listeners_first(redis: Redis) -> None:
    """Every touch names its keys to the listeners (the cluster subscriber subscribes to them)."""
    a = make_store(redis, "a")
    heard: list[list[str]] = []
    a.touch_listeners.append(heard.append)
    await a.touch_many([(K, True, -1), (K + "-2", False, -1)])
    assert heard == [[K, K + "-2"]]
    await a.touch_many([])
    assert len(heard) == 1
