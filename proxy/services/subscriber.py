"""Fan-in: every replica hears the snapshot writes it cares about and refreshes L1.

* One Redis (and ``memory://``): every write is announced on one channel (PUBLISH/SUBSCRIBE),
  pokes on another; each replica hears everything and ignores what it does not cache.
* Redis Cluster: each resource's shard channel, subscribed where this replica cares (see
  ``proxy.store.shard_pubsub``).

The listening itself is ``proxy.store.pubsub``'s; this module decides what a message means for
the replica's cache (the ``Announcements`` it calls back).

An announcement ("key|version|fetched_ms|mode") of a write this replica does not have yet makes
it re-read the key: at most one snapshot read per write and replica, and none for the writer,
which keeps what its write's reply said. The writer's own announcement can arrive before that
reply does (two connections, two sockets); while one of its writes of a key is on its way
(``store.writes_in_flight``), announcements of that key wait for the reply and are checked
against the state it returned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import structlog

from proxy.services.cache import SnapshotCache
from proxy.snapshot import Snapshot
from proxy.store import keys
from proxy.store.base import AnyRedis
from proxy.store.errors import StoreError
from proxy.store.pubsub import open_subscriptions
from proxy.store.redis_store import RedisStore

log = structlog.get_logger("proxy.subscriber")

# (version, fetched_ms or error_ms, mode) of one announcement.
Note = tuple[int, int, str]


def _parse(data: bytes) -> tuple[str, int, int, str] | None:
    try:
        key, raw_version, raw_ms, mode = data.decode().rsplit("|", 3)
        return key, int(raw_version), int(raw_ms), mode
    except ValueError:
        return None


def covers(snap: Snapshot, version: int, at_ms: int, mode: str) -> bool:
    """True when ``snap`` already holds the write announced as (version, at_ms, mode)."""
    if snap.version != version:
        return snap.version > version
    if mode == "data":
        return snap.fetched_ms >= at_ms
    return mode == "error" and snap.error_ms >= at_ms


class SnapshotSubscriber:
    """Listens for snapshot writes; re-reads changed keys this replica cares about."""

    def __init__(
        self,
        *,
        pubsub_redis: AnyRedis,
        store: RedisStore,
        cache: SnapshotCache,
        on_poke: Callable[[str], None] = lambda key: None,
        extra_keys: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self._on_poke = on_poke
        self._extra_keys = extra_keys
        self._store = store
        self._cache = cache
        self._pending: set[str] = set()
        # Announcements of keys with one of our writes on its way, until its reply is back.
        self._deferred: dict[str, list[Note]] = {}
        self._wake = asyncio.Event()
        self.connected = asyncio.Event()
        self._subscriptions = open_subscriptions(
            pubsub_redis, self, timeout_s=store.timeout_s, connected=self.connected
        )
        self.sharded = self._subscriptions.sharded
        if self.sharded:
            # Whatever this replica touches (interest flushes, cold fetches about to wait for
            # another replica's write) is wanted: subscribed before the write can happen.
            store.touch_listeners.append(self._subscriptions.want_many)
        store.write_listeners.append(self._write_returned)

    # -- what this replica cares about (cluster) -----------------------------------------------

    def want(self, key: str) -> None:
        """Hear about writes of ``key`` from now on (cluster: subscribe at once).

        Call it when a resource is first asked for, before waiting for another replica's
        write (the cold path): the subscriber would otherwise only see it once it is cached.
        A no-op on one Redis, where every write reaches every replica.
        """
        self.want_many([key])

    def want_many(self, names: Iterable[str]) -> None:
        """``want`` for several keys (the store calls it on every touch)."""
        self._subscriptions.want_many(names)

    def drop(self, key: str) -> None:
        """Forget a ``want``; the subscription lapses once ``key`` is not cached either."""
        self._subscriptions.drop(key)

    def subscribed_keys(self) -> set[str]:
        """Keys whose shard channel is subscribed now (cluster; for tests and metrics)."""
        return self._subscriptions.subscribed_keys()

    @property
    def node_failures(self) -> int:
        """Node readers lost and rebuilt (cluster)."""
        return self._subscriptions.node_failures

    # -- what the listener asks (``proxy.store.pubsub.Announcements``) ---------------------------

    def cached_keys(self) -> Iterable[str]:
        """The keys cached here (re-read after a reconnect; subscribed on a cluster)."""
        return self._cache.keys()

    def extra_keys(self) -> Iterable[str]:
        """Keys to hear pokes for although not cached (cluster: the leases held here)."""
        return self._extra_keys() if self._extra_keys is not None else ()

    def on_poke(self, key: str) -> None:
        """A poke of ``key``: the scheduler polls it now if its lease is held here."""
        self._on_poke(key)

    # -- messages ------------------------------------------------------------------------------

    def on_message(self, data: bytes) -> None:
        """Handle one channel message ("key|version|fetched_ms|mode"; mode "poke" on a cluster)."""
        parsed = _parse(data)
        if parsed is None:
            return
        key, version, at_ms, mode = parsed
        if mode == keys.POKE_MODE:
            self._on_poke(key)
            return
        if key in self._store.writes_in_flight:
            # Most likely our own write, whose reply is still on its way: decide once it is back.
            self._deferred.setdefault(key, []).append((version, at_ms, mode))
            return
        if self._wanted(key, version, at_ms, mode):
            self.missed([key])

    def _wanted(self, key: str, version: int, at_ms: int, mode: str) -> bool:
        """True when the announced write is news here (somebody watches and we lack it)."""
        cached = self._cache.get(key)
        if cached is None:
            return self._cache.has_listeners(key)  # else nobody here watches it
        return not covers(cached, version, at_ms, mode)

    def _write_returned(self, key: str, written: Snapshot | None) -> None:
        """One of our writes of ``key`` is back: re-read only what it does not account for."""
        if key in self._store.writes_in_flight or key not in self._deferred:
            return  # another write of ours is still on its way (or nothing was heard)
        for version, at_ms, mode in self._deferred.pop(key):
            if written is not None and covers(written, version, at_ms, mode):
                continue  # our own write: the writer keeps what the reply said
            if self._wanted(key, version, at_ms, mode):
                self.missed([key])
                return

    def missed(self, names: Iterable[str]) -> None:
        """Re-read ``names`` (batched by ``refresh_forever``)."""
        self._pending.update(names)
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
            except StoreError as exc:
                log.warning("snapshot_refresh_failed", error=type(exc).__name__)
                self._pending.update(batch)
                await asyncio.sleep(0.5)
                self._wake.set()

    async def listen_forever(self) -> None:
        """Listen (``proxy.store.pubsub``); after a broken connection, re-read what was missed."""
        await self._subscriptions.listen()
