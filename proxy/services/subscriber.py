"""Fan-in: every replica hears every snapshot write on one Redis channel and refreshes L1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from proxy.services.cache import SnapshotCache
from proxy.store import keys
from proxy.store.redis_store import RedisStore

log = structlog.get_logger("proxy.subscriber")


class SnapshotSubscriber:
    """Listens on the snapshot channel; re-reads changed keys this replica cares about."""

    def __init__(
        self,
        *,
        pubsub_redis: Redis,
        store: RedisStore,
        cache: SnapshotCache,
        on_poke: Callable[[str], None] = lambda key: None,
    ) -> None:
        self._redis = pubsub_redis
        self._on_poke = on_poke
        self._store = store
        self._cache = cache
        self._pending: set[str] = set()
        self._wake = asyncio.Event()
        self.connected = asyncio.Event()

    def on_message(self, data: bytes) -> None:
        """Handle one channel message ("key|version|fetched_ms|mode")."""
        try:
            key, version, fetched_ms, _mode = data.decode().rsplit("|", 3)
        except ValueError:
            return
        cached = self._cache.get(key)
        if cached is None:
            if not self._cache.has_listeners(key):
                return  # nobody here watches it
        elif (
            cached.version == int(version)
            and cached.fetched_ms >= int(fetched_ms)
            and cached.error_ms >= int(fetched_ms)
        ):
            return  # our own write, already applied
        self._pending.add(key)
        self._wake.set()

    async def refresh_forever(self) -> None:
        """Re-read pending keys in batches (one round trip per batch)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch = list(self._pending)
            self._pending.clear()
            try:
                for snap in await self._store.read_many(batch):
                    if snap is not None:
                        self._cache.put(snap)
            except RedisError as exc:
                log.warning("snapshot_refresh_failed", error=type(exc).__name__)
                self._pending.update(batch)
                await asyncio.sleep(0.5)
                self._wake.set()

    async def listen_forever(self) -> None:
        """Subscribe and dispatch; on a broken connection, resubscribe and re-read everything."""
        backoff_s = 0.1
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(keys.SNAPSHOT_CHANNEL, keys.POKE_CHANNEL)
                self.connected.set()
                # Anything published while we were away is picked up by re-reading all keys.
                self._pending.update(self._cache.keys())
                self._wake.set()
                backoff_s = 0.1
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is None or msg.get("type") != "message":
                        continue
                    if msg["channel"] in (keys.POKE_CHANNEL, keys.POKE_CHANNEL.encode()):
                        self._on_poke(msg["data"].decode())
                    else:
                        self.on_message(msg["data"])
            except (RedisError, OSError) as exc:
                self.connected.clear()
                log.warning("subscriber_disconnected", error=type(exc).__name__)
                await asyncio.sleep(backoff_s)
                backoff_s = min(5.0, backoff_s * 2)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
