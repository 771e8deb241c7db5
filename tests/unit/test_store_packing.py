"""redis[hiredis] in use both ways, and batched scripts without SCRIPT EXISTS round trips."""

from __future__ import annotations

import fakeredis
import pytest
from redis.asyncio.connection import Connection
from redis.utils import HIREDIS_AVAILABLE

from proxy.store import keys
from proxy.store.connect import make_clients
from proxy.store.packing import use_hiredis_packing
from proxy.store.redis_store import RedisStore

ARGS = ("EVALSHA", "a" * 40, 2, "lp:{progress:-:cnt_x}:lease", "k2", "r1:17", 1950, 2.5, b"\xff")


@pytest.mark.timeout(10)
async def test_the_commands_client_parses_and_packs_with_hiredis() -> None:
    """The installed extra is really used: hiredis parses replies and packs every command."""
    assert HIREDIS_AVAILABLE, "redis[hiredis] is a dependency: hiredis must be importable"
    commands, pubsub = make_clients("redis://127.0.0.1:6399/0", timeout_s=1.0)
    try:
        assert use_hiredis_packing(commands)
        conn = commands.connection_pool.make_connection()
        assert type(conn._parser).__name__ == "_AsyncHiredisParser"
        python_packed = b"".join(Connection().pack_command(*ARGS))
        assert b"".join(conn.pack_command(*ARGS)) == python_packed
        assert use_hiredis_packing(commands)  # twice is harmless
    finally:
        await commands.aclose()
        await pubsub.aclose()


@pytest.mark.timeout(10)
async def test_fakeredis_clients_are_left_alone() -> None:
    """fakeredis has its own connection class: not replaced."""
    client = fakeredis.FakeAsyncRedis()
    before = client.connection_pool.connection_class
    assert not use_hiredis_packing(client)
    assert client.connection_pool.connection_class is before


@pytest.mark.timeout(10)
async def test_batched_scripts_load_themselves_after_a_script_flush() -> None:
    """A Redis that lost its scripts answers NOSCRIPT; exactly those calls run again, once."""
    store = RedisStore(
        fakeredis.FakeAsyncRedis(),
        owner="r1",
        lease_ttl_ms=60_000,
        linger_ms=60_000,
        snapshot_ttl_ms=60_000,
    )
    names = [f"progress:-:cnt_{i}" for i in range(3)]
    first = await store.touch_many([(k, True, -1) for k in names])
    assert all(t.fence > 0 for t in first)
    await store.redis.script_flush()
    lost = await store.renew_many({t.key: store.token(t.fence) for t in first})
    assert lost == set()
    for t in first:
        assert await store.redis.pttl(keys.lease(t.key)) > 59_000
