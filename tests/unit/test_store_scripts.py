"""The Lua scripts, run against fakeredis (fast) and a real redis-server (truth)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import fakeredis
import pytest
from redis.asyncio import Redis

from proxy.store import keys
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
    assert await take(a) == 1
    [r] = await b.touch_many([(K, True, -1)])
    assert r.fence == 0 and r.holder == "a:1"
    await a.release(K, a.token(1))
    assert await take(b) == 2
    await asyncio.sleep(0.25)  # b's 100 ms lease expires on the Redis clock
    assert await take(a) == 3


async def test_claim_enforces_gap_watch_and_lease(redis: Redis) -> None:
    """The gate refuses a second poll inside the gap, an unwatched key and a lost lease."""
    a = make_store(redis, "a")
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


async def test_cooldown_blocks_every_replica(redis: Redis) -> None:
    """A cooldown set by one replica stops the others, and is never shortened."""
    a, b = make_store(redis, "a"), make_store(redis, "b")
    fence = await take(a)
    assert await b.extend_cooldown(5000) > 4000
    assert await b.extend_cooldown(10) > 4000  # not shortened
    verdict = await a.claim(K, a.token(fence), gap_ms=0, require_watch=False)
    assert verdict.verdict == "cooldown" and verdict.ms > 4000


async def test_budget_caps_requests_per_minute(redis: Redis) -> None:
    """The shared GCRA admits the burst, then refuses until time passes."""
    policy = BudgetPolicy.per_minute(6, burst=2)
    a = make_store(redis, "a", budget=policy)
    verdicts = []
    for i in range(4):
        key = f"{K}-{i}"
        fence = await take(a, key)
        verdicts.append((await a.claim(key, a.token(fence), gap_ms=0, require_watch=False)).verdict)
    assert verdicts[:2] == ["ok", "ok"]
    assert verdicts[2:] == ["budget", "budget"]


async def test_write_is_fenced(redis: Redis) -> None:
    """An old lease holder's write is refused once a newer holder exists."""
    a, b = make_store(redis, "a", lease_ttl_ms=100), make_store(redis, "b")
    old = await take(a)
    await asyncio.sleep(0.25)
    new = await take(b)
    snap, changed = await write(b, new, b'{"v":2}')
    assert snap is not None and changed and snap.version == 1
    refused, _ = await write(a, old, b'{"v":1}')
    assert refused is None
    stored = await b.read(K)
    assert stored is not None and stored.body == b'{"v":2}'


async def test_versions_count_changes_and_stage_clock(redis: Redis) -> None:
    """The version moves only when the body changes; the stage clock only on a stage change."""
    a = make_store(redis, "a")
    fence = await take(a)
    s1, _ = await write(a, fence, b"one", stage="s1")
    await asyncio.sleep(0.02)
    same, changed = await write(a, fence, b"one", stage="s1")
    assert same is not None and s1 is not None and not changed and same.version == 1
    assert same.fetched_ms >= s1.fetched_ms
    await asyncio.sleep(0.02)
    s1b, _ = await write(a, fence, b"two", stage="s1")
    assert s1b is not None and s1b.version == 2 and s1b.stage_since_ms == s1.stage_since_ms
    s2, _ = await write(a, fence, b"three", stage="s2")
    assert s2 is not None and s2.version == 3 and s2.stage_since_ms > s1.stage_since_ms


async def test_version_survives_snapshot_expiry(redis: Redis) -> None:
    """A re-created snapshot continues the version count (replicas ignore older versions)."""
    a = make_store(redis, "a")
    fence = await take(a)
    await write(a, fence, b"one")
    await write(a, fence, b"two")
    await redis.delete(keys.snapshot(K))
    again, _ = await write(a, fence, b"three")
    assert again is not None and again.version == 3


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
    assert healed is not None and healed.error == "" and healed.version == 1


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
    await asyncio.sleep(0.02)
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
