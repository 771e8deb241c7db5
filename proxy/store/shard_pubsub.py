"""Redis Cluster fan-in: sharded pub/sub, one SSUBSCRIBE reader per master node.

A plain PUBLISH would be copied to every node of the cluster, so each resource has a shard
channel in its own slot (``keys.channel``) that the fenced write script SPUBLISHes on, and pokes
go there too. ``ShardSubscriptions`` keeps the channels of the resources this replica touches
(every ``store.touch_many``: its interest flushes, and each cold fetch before it waits for
another replica's write), caches (looked at four times a second), or that ``want`` /
``extra_keys`` name, subscribed on their current owners, with one connection and one reader task
per master node.

A node reader that fails (node down, slot moved, MOVED reply) is dropped, the slot map is read
again, its channels are subscribed again on their current owners, and every resource
(re)subscribed is handed to ``Announcements.missed`` (re-read from Redis): what was written
while nobody listened is picked up that way, as the single-Redis listener does after a
reconnect. Messages go to ``Announcements.on_message``; what they mean is the subscriber's
business (``proxy.services.subscriber``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import structlog
from redis.asyncio import ConnectionPool
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry

from proxy.store import keys
from proxy.store.announcements import FIRST_BACKOFF_S, MAX_BACKOFF_S, Announcements

log = structlog.get_logger("proxy.subscriber")

# How often the wanted set is compared with the subscriptions (a ``want`` call or a failed node
# reader does not wait for it).
_RECONCILE_S = 0.25
# A resource no longer cached or wanted keeps its subscription this long (no churn on flaps).
_UNSUBSCRIBE_AFTER_S = 10.0
# How long ``want(key)`` keeps a resource subscribed when it does not reach the cache.
_WANT_TTL_S = 60.0
# A node reader pings its node this often and gives up on it when no answer comes within it.
_PING_EVERY_S = 5.0

_ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)


class ShardSubscriptions:
    """The shard channels this replica listens on, and the node readers that hold them."""

    sharded = True

    def __init__(
        self,
        cluster: RedisCluster,
        *,
        timeout_s: float,
        announcements: Announcements,
        connected: asyncio.Event,
    ) -> None:
        self._cluster = cluster
        self.timeout_s = timeout_s
        self._announcements = announcements
        self._connected = connected
        self._wanted: dict[str, float] = {}  # key -> until (monotonic) for ``want``
        self._subscribed: dict[str, str] = {}  # key -> node name whose reader has its channel
        self._unwanted_since: dict[str, float] = {}
        self._readers: dict[str, _NodeReader] = {}
        self._kick = asyncio.Event()
        self._topology_stale = True
        self._discovered = False
        self.node_failures = 0  # node readers lost and rebuilt

    # -- what this replica cares about -----------------------------------------------------------

    def want_many(self, names: Iterable[str]) -> None:
        """Keep the channels of ``names`` subscribed for a while (subscribe the new ones now)."""
        until = time.monotonic() + _WANT_TTL_S
        new = False
        for key in names:
            self._wanted[key] = until
            new = new or key not in self._subscribed
        if new:
            self._kick.set()

    def drop(self, key: str) -> None:
        """Forget a ``want``; the subscription lapses once ``key`` is not cached either."""
        self._wanted.pop(key, None)

    def subscribed_keys(self) -> set[str]:
        """Keys whose shard channel is subscribed now."""
        return set(self._subscribed)

    def on_message(self, data: bytes) -> None:
        """A node reader heard a shard channel message."""
        self._announcements.on_message(data)

    def _wanted_now(self, now: float) -> set[str]:
        wanted = set(self._announcements.cached_keys())
        wanted.update(self._announcements.extra_keys())
        for key, until in list(self._wanted.items()):
            if until < now:
                del self._wanted[key]
            else:
                wanted.add(key)
        return wanted

    # -- the loop ----------------------------------------------------------------------------------

    async def listen(self) -> None:
        """Keep one SSUBSCRIBE reader per master subscribed to the channels of wanted keys."""
        backoff_s = FIRST_BACKOFF_S
        try:
            while True:
                try:
                    remap = self._topology_stale
                    if remap:
                        await self._read_topology()
                    await self._reconcile(remap)
                except _ERRORS as exc:
                    if self._connected.is_set() or backoff_s == FIRST_BACKOFF_S:
                        log.warning("subscriber_disconnected", error=type(exc).__name__)
                    self._connected.clear()
                    self._topology_stale = True
                    await asyncio.sleep(backoff_s)
                    backoff_s = min(MAX_BACKOFF_S, backoff_s * 2)
                    continue
                backoff_s = FIRST_BACKOFF_S
                self._connected.set()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_RECONCILE_S):
                        await self._kick.wait()
                self._kick.clear()
        finally:
            for reader in list(self._readers.values()):
                await reader.aclose()
            self._readers.clear()
            self._subscribed.clear()

    async def _read_topology(self) -> None:
        async with asyncio.timeout(self.timeout_s * 2):
            if not self._discovered:
                await self._cluster.initialize()  # first use: the client discovers the cluster
                self._discovered = True
            else:
                await self._cluster.nodes_manager.initialize()  # read the slot map again
        self._topology_stale = False

    async def _reconcile(self, remap: bool) -> None:
        """Subscribe what is wanted and not subscribed (then re-read it); drop the long unwanted.

        ``remap``: the slot map was just read again, so check that every subscription is still
        on its channel's owner (a slot that moved without its reader failing).
        """
        now = time.monotonic()
        wanted = self._wanted_now(now)
        candidates = wanted if remap else wanted.difference(self._subscribed)
        for key in wanted.intersection(self._unwanted_since):
            del self._unwanted_since[key]
        add, nodes, failure = await self._placements(candidates)
        for name, batch in add.items():
            error = await self._subscribe_on(nodes[name], batch)
            failure = failure or error
        await self._drop_unwanted(wanted, now)
        if failure is not None:
            raise failure

    async def _placements(
        self, candidates: Iterable[str]
    ) -> tuple[dict[str, list[str]], dict[str, ClusterNode], BaseException | None]:
        """Which node each candidate's channel goes to (moving those whose slot moved)."""
        add: dict[str, list[str]] = defaultdict(list)  # node name -> keys
        nodes: dict[str, ClusterNode] = {}
        failure: BaseException | None = None
        for key in candidates:
            try:
                node = self._cluster.get_node_from_key(keys.channel(key))
            except _ERRORS as exc:  # a slot nobody serves right now: read the map again later
                failure = failure or exc
                continue
            if node is None or self._subscribed.get(key) == node.name:
                continue
            await self._unsubscribe_moved(key)
            nodes[node.name] = node
            add[node.name].append(key)
        return add, nodes, failure

    async def _unsubscribe_moved(self, key: str) -> None:
        """The slot of ``key`` moved while its old reader lived: leave the old node."""
        current = self._subscribed.pop(key, None)
        old = self._readers.get(current) if current is not None else None
        if old is None:
            return
        try:
            await old.unsubscribe([key])
        except _ERRORS as exc:
            self.reader_failed(old, exc)

    async def _subscribe_on(self, node: ClusterNode, batch: list[str]) -> BaseException | None:
        """Subscribe ``batch`` on ``node`` (its reader made if needed), then re-read them."""
        reader = self._readers.get(node.name)
        if reader is None or reader.dead:
            reader = _NodeReader(node, self, self.timeout_s)
            self._readers[node.name] = reader
        try:
            await reader.subscribe(batch)
        except _ERRORS as exc:
            # That node only: the others are subscribed all the same.
            self.reader_failed(reader, exc)
            return exc
        if reader.dead:  # it broke while we subscribed: the next round starts over
            return None
        for key in batch:
            self._subscribed[key] = node.name
        # Written before we listened (or while a node reader was down): read it now.
        self._announcements.missed(batch)
        return None

    async def _drop_unwanted(self, wanted: set[str], now: float) -> None:
        stale: dict[str, list[str]] = defaultdict(list)
        for key, name in self._subscribed.items():
            if key in wanted:
                continue
            since = self._unwanted_since.setdefault(key, now)
            if now - since >= _UNSUBSCRIBE_AFTER_S:
                stale[name].append(key)
        for name, batch in stale.items():
            for key in batch:
                del self._subscribed[key]
                self._unwanted_since.pop(key, None)
            reader = self._readers.get(name)
            if reader is None:
                continue
            if not any(n == name for n in self._subscribed.values()):
                del self._readers[name]  # nothing left on that node: close the connection
                await reader.aclose()
                continue
            try:
                await reader.unsubscribe(batch)
            except _ERRORS as exc:
                self.reader_failed(reader, exc)

    def reader_failed(self, reader: _NodeReader, exc: BaseException) -> None:
        """A node reader broke: forget its subscriptions, read the slot map, subscribe again."""
        if self._readers.get(reader.name) is reader:
            del self._readers[reader.name]
        lost = [k for k, name in self._subscribed.items() if name == reader.name]
        for key in lost:
            del self._subscribed[key]
        if not reader.dead:
            reader.dead = True
            self.node_failures += 1
            if lost:  # a reader that never got going fails quietly: the outage is logged once
                log.warning(
                    "subscriber_node_lost",
                    node=reader.name,
                    error=type(exc).__name__,
                    resubscribing=len(lost),
                )
            task = asyncio.get_running_loop().create_task(reader.aclose())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._topology_stale = True
        self._kick.set()


class _ShardPubSub(PubSub):
    """A PubSub on one node that, if it ever reconnects, resubscribes one slot per command."""

    async def _resubscribe_shard_channels(self) -> None:
        by_slot: dict[int, dict[Any, Any]] = defaultdict(dict)
        for channel, handler in self.shard_channels.items():
            by_slot[key_slot(self.encoder.encode(channel))][channel] = handler
        for subscriptions in by_slot.values():
            await self._resubscribe(subscriptions, self.ssubscribe)


class _NodeReader:
    """One connection to one master: SSUBSCRIBE/SUNSUBSCRIBE and a task that reads messages."""

    def __init__(self, node: ClusterNode, owner: ShardSubscriptions, timeout_s: float) -> None:
        self.name = node.name
        self.dead = False
        self._owner = owner
        self._timeout_s = timeout_s
        kwargs = dict(node.connection_kwargs)
        # No read timeout (it waits for messages); no retries and no health check on send
        # (a broken connection is dropped whole and rebuilt against the current slot map, and
        # the reader pings the node itself).
        kwargs.update(socket_timeout=None, retry=Retry(NoBackoff(), 0), health_check_interval=0)
        self._pool = ConnectionPool(connection_class=node.connection_class, **kwargs)
        self._pubsub = _ShardPubSub(connection_pool=self._pool)
        self._send = asyncio.Lock()  # one writer at a time on the connection
        self._dropping: set[bytes] = set()
        self._task: asyncio.Task[None] | None = None
        self._pong_due = 0.0

    async def subscribe(self, names: list[str]) -> None:
        """SSUBSCRIBE the channels of ``names`` (one command per slot; Redis wants that)."""
        if self.dead:
            raise ConnectionError(f"node reader {self.name} is closed")
        async with self._send, asyncio.timeout(self._timeout_s):
            for group in _by_slot([keys.channel(k) for k in names]):
                self._dropping.difference_update(c.encode() for c in group)
                await self._pubsub.ssubscribe(*group)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._read(), name=f"subscriber-{self.name}"
            )

    async def unsubscribe(self, names: list[str]) -> None:
        """SUNSUBSCRIBE the channels of ``names``."""
        if self.dead:
            return
        async with self._send, asyncio.timeout(self._timeout_s):
            for group in _by_slot([keys.channel(k) for k in names]):
                self._dropping.update(c.encode() for c in group)
                await self._pubsub.sunsubscribe(*group)

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + _PING_EVERY_S
        try:
            while True:
                msg = await self._pubsub.get_message(timeout=1.0)
                now = loop.time()
                if msg is not None:
                    kind = msg["type"]
                    if kind == "smessage":
                        self._owner.on_message(msg["data"])
                    elif kind == "pong":
                        self._pong_due = 0.0
                    elif kind == "sunsubscribe":
                        if msg["channel"] not in self._dropping:
                            # Not asked for: the slot moved to another node.
                            raise ConnectionError("shard channel unsubscribed by the server")
                        self._dropping.discard(msg["channel"])
                if self._pong_due and now > self._pong_due:
                    raise TimeoutError("node did not answer a ping")
                if now >= next_ping:
                    next_ping = now + _PING_EVERY_S
                    if not self._pong_due:
                        self._pong_due = now + _PING_EVERY_S
                    async with self._send:
                        await self._pubsub.ping()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure: drop the node reader, rebuild it
            self._owner.reader_failed(self, exc)

    async def aclose(self) -> None:
        """Stop reading and close the connection."""
        self.dead = True
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
        with contextlib.suppress(Exception):
            await self._pool.disconnect()


def _by_slot(channels: list[str]) -> list[list[str]]:
    groups: dict[int, list[str]] = defaultdict(list)
    for channel in channels:
        groups[key_slot(channel.encode())].append(channel)
    return list(groups.values())
