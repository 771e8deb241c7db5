"""Listening for snapshot announcements: the Redis side of the snapshot subscriber.

* One Redis, a Sentinel set (and ``memory://``): ``ChannelSubscriptions``, one connection
  SUBSCRIBEd to the snapshot channel and the poke channel; every replica hears every write.
* Redis Cluster: ``ShardSubscriptions`` (``shard_pubsub``), the shard channels of the keys this
  replica cares about, one SSUBSCRIBE reader per master node.

``open_subscriptions`` picks one for the pub/sub client. Both hand what they hear to an
``Announcements`` (``proxy.services.subscriber``, which owns what a message means for the
cache) and tell it which keys to re-read because their messages may have been missed (after a
reconnect, a resubscription); both keep ``connected`` set while they listen.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Protocol

import structlog
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from proxy.store import keys
from proxy.store.announcements import FIRST_BACKOFF_S, MAX_BACKOFF_S, Announcements
from proxy.store.base import AnyRedis
from proxy.store.shard_pubsub import ShardSubscriptions

log = structlog.get_logger("proxy.subscriber")


class Subscriptions(Protocol):
    """A running listener, whichever kind ``open_subscriptions`` made."""

    sharded: bool
    node_failures: int

    async def listen(self) -> None:
        """Listen until cancelled, reconnecting (and reporting ``missed`` keys) after failures."""

    def want_many(self, names: Iterable[str]) -> None:
        """Hear about writes of ``names`` from now on (a no-op where every write is heard)."""

    def drop(self, key: str) -> None:
        """Forget a ``want_many`` of ``key``."""

    def subscribed_keys(self) -> set[str]:
        """Keys whose shard channel is subscribed now (empty on one Redis)."""


def open_subscriptions(
    client: AnyRedis,
    announcements: Announcements,
    *,
    timeout_s: float,
    connected: asyncio.Event,
) -> Subscriptions:
    """The listener for ``client``: shard channels on a Redis Cluster, two channels elsewhere."""
    if isinstance(client, RedisCluster):
        return ShardSubscriptions(
            client, timeout_s=timeout_s, announcements=announcements, connected=connected
        )
    return ChannelSubscriptions(client, announcements, connected=connected)


class ChannelSubscriptions:
    """One connection SUBSCRIBEd to the snapshot and poke channels (one Redis or Sentinel)."""

    sharded = False
    node_failures = 0

    def __init__(
        self, client: Redis, announcements: Announcements, *, connected: asyncio.Event
    ) -> None:
        self._client = client
        self._announcements = announcements
        self._connected = connected

    def want_many(self, names: Iterable[str]) -> None:
        """Every write reaches every replica here: nothing to subscribe."""

    def drop(self, key: str) -> None:
        """Nothing to forget (see ``want_many``)."""

    def subscribed_keys(self) -> set[str]:
        """No shard channels on one Redis."""
        return set()

    async def listen(self) -> None:
        """Subscribe and dispatch; on a broken connection, resubscribe and re-read everything."""
        backoff_s = FIRST_BACKOFF_S
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(keys.SNAPSHOT_CHANNEL, keys.POKE_CHANNEL)
                self._connected.set()
                # Anything published while we were away is picked up by re-reading all keys.
                self._announcements.missed(self._announcements.cached_keys())
                backoff_s = FIRST_BACKOFF_S
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is None or msg.get("type") != "message":
                        continue
                    if msg["channel"] in (keys.POKE_CHANNEL, keys.POKE_CHANNEL.encode()):
                        self._announcements.on_poke(msg["data"].decode())
                    else:
                        self._announcements.on_message(msg["data"])
            except (RedisError, OSError) as exc:
                if self._connected.is_set() or backoff_s == FIRST_BACKOFF_S:
                    log.warning("subscriber_disconnected", error=type(exc).__name__)
                self._connected.clear()
                await asyncio.sleep(backoff_s)
                backoff_s = min(MAX_BACKOFF_S, backoff_s * 2)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
