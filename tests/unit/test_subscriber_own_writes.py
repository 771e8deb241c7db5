"""The writer never reads its own write back, even when its announcement beats the reply.

The announcement (pub/sub) and the write's reply come back on two connections, in either order.
These tests deliver the real announcement (fakeredis pub/sub) at chosen moments and check what
the subscriber would re-read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import fakeredis
import pytest

from proxy.resources import PROGRESS, ResourceRef
from proxy.services.cache import SnapshotCache
from proxy.services.subscriber import SnapshotSubscriber
from proxy.snapshot import Snapshot
from proxy.store import keys
from proxy.store.health import StoreUnavailable
from proxy.store.redis_store import RedisStore

REF = ResourceRef(PROGRESS, "cnt_3f2b8c1e-9a4d-4e7b-8c21-0a1b2c3d4e5f")


class Replica:
    """One replica's store, cache and subscriber on a shared fake server."""

    def __init__(self, server: fakeredis.FakeServer, owner: str) -> None:
        self.redis = fakeredis.FakeAsyncRedis(server=server)
        self.store = RedisStore(
            self.redis,
            owner=owner,
            lease_ttl_ms=60_000,
            linger_ms=60_000,
            snapshot_ttl_ms=60_000,
        )
        self.cache = SnapshotCache()
        self.sub = SnapshotSubscriber(pubsub_redis=self.redis, store=self.store, cache=self.cache)
        self.pubsub = self.redis.pubsub()
        self.real_call = self.store.call

    async def listen(self) -> None:
        await self.pubsub.subscribe(keys.SNAPSHOT_CHANNEL)
        assert (await self.pubsub.get_message(timeout=1.0)) is not None  # the subscribe reply

    async def next_announcement(self) -> bytes:
        msg = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        assert msg is not None, "no announcement"
        data: bytes = msg["data"]
        return data

    def announce_before_reply(self) -> None:
        """Deliver the write's announcement after Redis ran it, before its reply is handled."""

        async def call(op: Callable[[], Awaitable[Any]], *, probe: bool = False) -> Any:
            row = await self.real_call(op, probe=probe)
            self.sub.on_message(await self.next_announcement())
            return row

        self.store.call = call  # type: ignore[method-assign]

    async def write(self, fence: int, body: bytes) -> Snapshot | None:
        written, _ = await self.store.write_data(
            REF.key,
            self.store.token(fence),
            fence,
            body=body,
            etag=f'"{body.decode()}"',
            status_code=200,
            status="processing",
            stage="rendering",
            terminal=False,
            upstream_etag="",
        )
        if written is not None:
            self.cache.put(written)  # what the scheduler does at once
        return written

    def will_reread(self) -> bool:
        return REF.key in self.sub._pending


async def lease(replica: Replica) -> int:
    [touched] = await replica.store.touch_many([(REF.key, True, -1)])
    assert touched.fence > 0
    return touched.fence


@pytest.mark.timeout(10)
async def test_own_announcement_before_the_reply_is_not_read_back() -> None:
    """The race: the announcement is handled while the write's reply is still on its way."""
    me = Replica(fakeredis.FakeServer(), "r1")
    await me.listen()
    fence = await lease(me)
    assert await me.write(fence, b"one") is not None  # something cached first
    me.sub.on_message(await me.next_announcement())
    me.announce_before_reply()
    written = await me.write(fence, b"two")
    assert written is not None and written.body == b"two"
    assert not me.will_reread()
    assert me.sub._deferred == {} and me.store.writes_in_flight == {}


@pytest.mark.timeout(10)
async def test_own_announcement_after_the_reply_is_not_read_back() -> None:
    """The usual order: the reply (and the cache) first, then the announcement."""
    me = Replica(fakeredis.FakeServer(), "r1")
    await me.listen()
    fence = await lease(me)
    for body in (b"one", b"two", b"two"):  # the last one: same body, only the fetch time moves
        assert await me.write(fence, body) is not None
        me.sub.on_message(await me.next_announcement())
        assert not me.will_reread()


@pytest.mark.timeout(10)
async def test_a_fenced_out_write_reads_the_other_writers_state() -> None:
    """Our write is refused (a newer holder), and its announcement came during ours: re-read."""
    server = fakeredis.FakeServer()
    me, other = Replica(server, "r1"), Replica(server, "r2")
    await me.listen()
    old_fence = await lease(me)
    assert await me.write(old_fence, b"one") is not None
    me.sub.on_message(await me.next_announcement())
    await me.redis.delete(keys.lease(REF.key))  # our lease expired during a pause
    new_fence = await lease(other)
    assert new_fence > old_fence

    real = me.store.call

    async def call(op: Callable[[], Awaitable[Any]], *, probe: bool = False) -> Any:
        await other.write(new_fence, b"theirs")  # lands while ours is on its way
        me.sub.on_message(await me.next_announcement())
        return await real(op, probe=probe)

    me.store.call = call  # type: ignore[method-assign]
    assert await me.write(old_fence, b"mine") is None
    assert me.will_reread()


@pytest.mark.timeout(10)
async def test_a_write_whose_reply_was_lost_is_read_back() -> None:
    """Redis ran the write but the reply never came (timeout): its announcement is re-read."""
    me = Replica(fakeredis.FakeServer(), "r1")
    await me.listen()
    fence = await lease(me)
    assert await me.write(fence, b"one") is not None
    me.sub.on_message(await me.next_announcement())
    real = me.store.call

    async def call(op: Callable[[], Awaitable[Any]], *, probe: bool = False) -> Any:
        await real(op, probe=probe)
        me.sub.on_message(await me.next_announcement())
        raise StoreUnavailable("redis unreachable (TimeoutError)")

    me.store.call = call  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await me.write(fence, b"two")
    assert me.will_reread()
    assert me.store.writes_in_flight == {}


@pytest.mark.timeout(10)
async def test_another_replicas_write_is_read_once_by_a_watcher() -> None:
    """Not the writer, and it caches the key: one re-read; a second copy of it: none more."""
    server = fakeredis.FakeServer()
    me, other = Replica(server, "r1"), Replica(server, "r2")
    await me.listen()
    fence = await lease(other)
    first = await other.write(fence, b"one")
    assert first is not None
    me.cache.put(first)
    me.sub.on_message(await me.next_announcement())
    assert not me.will_reread()  # it already has that one
    await other.write(fence, b"two")
    me.sub.on_message(await me.next_announcement())
    assert me.will_reread()


@pytest.mark.timeout(10)
async def test_a_cold_waiter_hears_a_write_announced_before_it_waits() -> None:
    """A cold fetch listens from before its first read: another replica's write announced
    while it is still taking the lease is re-read and reaches it (not a re-read a step later).
    Without a listener nothing here watches the key, and the announcement is ignored."""
    server = fakeredis.FakeServer()
    me, other = Replica(server, "r1"), Replica(server, "r2")
    await me.listen()
    fence = await lease(other)
    await other.write(fence, b"one")
    me.sub.on_message(await me.next_announcement())
    assert not me.will_reread()  # nobody here asked for it

    with me.cache.waiting(REF.key, lambda _: True) as waiter:
        await other.write(fence, b"two")
        me.sub.on_message(await me.next_announcement())
        assert me.will_reread()
        refresh = asyncio.create_task(me.sub.refresh_forever())
        try:
            got = await waiter.result(5.0)
        finally:
            refresh.cancel()
    assert got is not None and got.body == b"two"
    assert not me.cache.has_listeners(REF.key)  # the block's end stops the listening
