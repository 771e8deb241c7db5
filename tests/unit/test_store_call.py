"""The store's one door: whatever fails inside a round trip is a store failure (a 503 upstream
of here), never an exception of the client library leaking out as a 500."""

from __future__ import annotations

import fakeredis
import pytest

from proxy.store.health import StoreUnavailable
from proxy.store.redis_store import RedisStore


@pytest.mark.timeout(10)
async def test_a_client_library_error_is_a_store_failure() -> None:
    store = RedisStore(
        fakeredis.FakeAsyncRedis(),
        owner="a",
        timeout_s=1.0,
        lease_ttl_ms=60_000,
        linger_ms=60_000,
        snapshot_ttl_ms=60_000,
    )

    async def broken() -> None:
        # What redis-py's cluster code has raised mid-failover: a plain Python error.
        raise AttributeError("'NoneType' object has no attribute 'write'")

    with pytest.raises(StoreUnavailable, match="AttributeError"):
        await store.call(broken)
    assert not store.health.up
    assert await store.ping()  # the probe brings it back
    assert store.health.up
