"""The façade the HTTP edge uses: get a resource's snapshot, wait for its next change.

Hot path: an L1 hit plus a dict write for interest, no Redis. Cold path: one fetch per resource
per replica (local single-flight) and one upstream request cluster-wide (the lease); everybody
else waits for the snapshot to be published.
"""

from __future__ import annotations

import asyncio
import functools
import math

from proxy.clock import Clock
from proxy.errors import ProxyError, Unavailable, UpstreamRateLimited, UpstreamTimeout
from proxy.resources import ResourceRef
from proxy.services.cache import Listener, SnapshotCache, Waiter
from proxy.services.interest import InterestTracker
from proxy.services.scheduler import Scheduler
from proxy.services.stats import Stats
from proxy.settings import Settings
from proxy.snapshot import Snapshot
from proxy.store.errors import StoreError
from proxy.store.redis_store import RedisStore

# How a request was satisfied, for Cache-Status.
HIT = "hit"
MISS = "miss"
COLLAPSED = "collapsed"

# What a client is told to wait when a cold request cannot reach Redis (the probe runs twice a
# second, so Redis coming back is noticed well within this).
_REDIS_RETRY_AFTER_S = 2


class Watching:
    """Snapshots on demand, from memory when possible."""

    def __init__(
        self,
        *,
        cache: SnapshotCache,
        store: RedisStore,
        scheduler: Scheduler,
        interest: InterestTracker,
        settings: Settings,
        clock: Clock,
        stats: Stats,
    ) -> None:
        self.cache = cache
        self.interest = interest
        self._store = store
        self._scheduler = scheduler
        self._settings = settings
        self._clock = clock
        self._stats = stats
        self._inflight: dict[str, asyncio.Task[tuple[Snapshot, str]]] = {}

    def now_ms(self) -> int:
        """Wall clock in ms (ages are computed against it)."""
        return int(self._clock.wall() * 1000)

    def peek(self, ref: ResourceRef) -> Snapshot | None:
        """The usable L1 snapshot of ``ref`` (expired negative entries do not count)."""
        snap = self.cache.get(ref.key)
        if snap is not None and snap.expires_ms and snap.expires_ms <= self.now_ms():
            self.cache.evict(ref.key)
            return None
        return snap

    def hit(self, ref: ResourceRef, tenant: str = "-") -> Snapshot | None:
        """The hot path: the L1 snapshot (interest noted), or None when it must be fetched."""
        self.interest.note(ref, tenant)
        return self.peek(ref)

    async def snapshot(self, ref: ResourceRef, tenant: str = "-") -> tuple[Snapshot, str]:
        """The current snapshot of ``ref`` and how it was obtained (hit, miss or collapsed)."""
        self.interest.note(ref, tenant)
        snap = self.peek(ref)
        if snap is not None:
            return snap, HIT
        pending = self._inflight.get(ref.key)
        if pending is not None:
            self._stats.collapsed += 1
            shared, _ = await asyncio.shield(pending)
            return shared, COLLAPSED
        # A task of its own: a client that leaves (cancelling its handler) must not cancel the
        # fetch that other requests are waiting on.
        task = asyncio.create_task(self._fetch_cold(ref, tenant))
        self._inflight[ref.key] = task
        task.add_done_callback(functools.partial(self._cold_done, ref.key))
        return await asyncio.shield(task)

    def _cold_done(self, key: str, task: asyncio.Task[tuple[Snapshot, str]]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so an unawaited failure is not reported twice

    async def _fetch_cold(self, ref: ResourceRef, tenant: str) -> tuple[Snapshot, str]:
        try:
            return await self._fetch_cold_via_redis(ref, tenant)
        except StoreError:
            # Memory had nothing for this resource, and the rest needs Redis (the lease that
            # keeps the upstream poll single, the floor, the budget): a clear, prompt 503.
            self._stats.redis_unavailable += 1
            raise Unavailable(
                "The proxy's shared store (Redis) is not answering and nothing is cached here "
                f"for {ref.kind.id_field} {ref.id} yet; retry shortly.",
                headers={"Retry-After": str(_REDIS_RETRY_AFTER_S)},
            ) from None

    async def _fetch_cold_via_redis(self, ref: ResourceRef, tenant: str) -> tuple[Snapshot, str]:
        # Waiting from before the first read: another replica's write that lands at any point
        # from here on reaches this request by its announcement, not by a re-read a step later.
        with self.cache.waiting(ref.key, lambda _: True) as waiter:
            return await self._fetch_cold_waiting(ref, tenant, waiter)

    async def _fetch_cold_waiting(
        self, ref: ResourceRef, tenant: str, waiter: Waiter
    ) -> tuple[Snapshot, str]:
        key = ref.key
        stored = await self._store.read(key)
        if stored is not None and not (stored.expires_ms and stored.expires_ms <= self.now_ms()):
            self.cache.put(stored)
            return self.cache.get(key) or stored, HIT
        cooldown_ms = await self._store.cooldown_left_ms()
        if cooldown_ms > 0:
            raise UpstreamRateLimited(
                "The Layers API asked the proxy to slow down and nothing is cached for this "
                "resource yet; retry after the indicated time.",
                headers={"Retry-After": str(math.ceil(cooldown_ms / 1000))},
            )
        self._stats.cold_fetches += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.cold_wait_s
        how = COLLAPSED
        step_s = max(0.5, self._settings.lease_ttl_s / 3)
        while True:
            touched = await self._scheduler.leases.take(
                ref, revalidate_ms=self.interest.revalidate_ms(ref), tenant=tenant
            )
            if touched.fence:
                how = MISS  # this replica took the lease: it makes the upstream request
            remaining = deadline - loop.time()
            if remaining <= 0:
                reason, wait_ms = self._scheduler.held_back.get(key, ("", 0))
                if reason in ("budget", "cooldown"):
                    raise UpstreamRateLimited(
                        "The shared Layers API budget is exhausted (too many resources watched "
                        "at once); this resource is queued for its first fetch. Retry later.",
                        headers={"Retry-After": str(max(1, math.ceil(wait_ms / 1000)))},
                    )
                raise UpstreamTimeout(
                    f"The Layers API did not answer for {ref.kind.id_field} {ref.id} within "
                    f"{self._settings.cold_wait_s:g}s."
                )
            got = await waiter.result(min(remaining, step_s))
            if got is None:
                got = await self._store.read(key)
                if got is not None:
                    self.cache.put(got)
            if got is not None:
                return got, how

    async def refresh_now(self, ref: ResourceRef) -> None:
        """Poll ``ref`` once as soon as the 1 s floor allows, wherever its lease lives.

        Terminal snapshots included (a webhook says something changed). The result goes through
        the normal fenced write, so every watcher everywhere gets it.
        """
        if self._scheduler.owns(ref.key):
            self._scheduler.poke(ref.key)
            return
        # revalidate_after 0: take the lease even when the stored snapshot is terminal.
        touched = await self._scheduler.leases.take(ref, revalidate_ms=0)
        if not touched.fence and touched.holder:
            await self._store.poke(ref.key)

    def latest(self, key: str) -> Snapshot | None:
        """The L1 snapshot of ``key`` as it is (a stream reads it when told ``key`` changed)."""
        return self.cache.get(key)

    def watch(self, ref: ResourceRef, tenant: str, listener: Listener) -> None:
        """Tell ``listener`` of every change of ``ref`` and keep it polled until ``unwatch``."""
        self.cache.listen(ref.key, listener)
        self.interest.hold(ref, tenant)

    def unwatch(self, ref: ResourceRef, tenant: str, listener: Listener) -> None:
        """Undo one ``watch``."""
        self.cache.unlisten(ref.key, listener)
        self.interest.unhold(ref, tenant)

    async def wait_change(
        self, ref: ResourceRef, after_version: int, timeout_s: float, tenant: str = "-"
    ) -> Snapshot | None:
        """The next snapshot of ``ref`` with another version, or None after ``timeout_s``."""
        self.interest.hold(ref, tenant)
        try:
            return await self.cache.wait_for(
                ref.key, lambda s: s.version != after_version and s.has_body, timeout_s
            )
        finally:
            self.interest.unhold(ref, tenant)


def raise_for_error_only(snap: Snapshot, ref: ResourceRef) -> None:
    """An error-only record means the upstream failed before we ever had data: say so."""
    if snap.has_body:
        return
    err = ProxyError(
        f"The Layers API could not be read for {ref.kind.id_field} {ref.id} "
        f"({snap.error or 'unknown error'}); nothing is cached yet.",
        status=snap.error_status or 502,
    )
    err.code = snap.error_code or "UPSTREAM_UNAVAILABLE"
    raise err
