"""Interest: which resources this replica's clients watch, pushed to Redis once a second.

The request path only writes a dict entry; the flush loop turns those into one pipelined round
trip that refreshes each resource's watch key (the linger), takes free leases for resources no
replica polls, and notices snapshots this replica missed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog
from redis.exceptions import RedisError

from proxy.cadence import poll_interval_s
from proxy.clock import Clock
from proxy.resources import ResourceRef
from proxy.services.cache import SnapshotCache
from proxy.services.census import Census
from proxy.services.scheduler import Scheduler
from proxy.settings import Settings
from proxy.store.redis_store import RedisStore

log = structlog.get_logger("proxy.interest")

# Keep an unwatched key in memory a little past the linger, so a client that comes back soon
# is still answered from memory.
_EVICT_GRACE_S = 5.0


@dataclass
class _Held:
    ref: ResourceRef
    tenants: dict[str, int]


class InterestTracker:
    """Collects local interest and flushes it to Redis."""

    def __init__(
        self,
        *,
        store: RedisStore,
        scheduler: Scheduler,
        cache: SnapshotCache,
        settings: Settings,
        clock: Clock,
    ) -> None:
        self._store = store
        self._scheduler = scheduler
        self._cache = cache
        self._settings = settings
        self._clock = clock
        self._recent: dict[str, ResourceRef] = {}
        self._recent_tenants: dict[str, set[str]] = {}
        self._held: dict[str, _Held] = {}
        self.census: Census | None = None
        self._last_seen: dict[str, float] = {}
        self._reval_ms = int(settings.revalidate_terminal_after_s * 1000)

    def revalidate_ms(self, ref: ResourceRef) -> int:
        """How old a terminal snapshot of ``ref`` must be before it is polled again (-1: never)."""
        return -1 if ref.kind.terminal_is_permanent else self._reval_ms

    def note(self, ref: ResourceRef, tenant: str = "-") -> None:
        """``tenant`` asked for ``ref`` just now (hot path: two dict writes)."""
        self._recent[ref.key] = ref
        who = self._recent_tenants.get(ref.key)
        if who is None:
            self._recent_tenants[ref.key] = {tenant}
        else:
            who.add(tenant)

    def hold(self, ref: ResourceRef, tenant: str = "-") -> None:
        """An open stream of ``tenant`` watches ``ref`` until ``unhold``."""
        held = self._held.get(ref.key)
        if held is None:
            held = self._held[ref.key] = _Held(ref, {})
        held.tenants[tenant] = held.tenants.get(tenant, 0) + 1
        self.note(ref, tenant)

    def unhold(self, ref: ResourceRef, tenant: str = "-") -> None:
        """A stream stopped watching ``ref``; the linger runs from now."""
        held = self._held.get(ref.key)
        if held is None or tenant not in held.tenants:
            return
        held.tenants[tenant] -= 1
        if held.tenants[tenant] <= 0:
            del held.tenants[tenant]
        if not held.tenants:
            del self._held[ref.key]
        self.note(ref, tenant)

    def watched_count(self) -> int:
        """Distinct resources watched here recently or held open."""
        return len(set(self._last_seen) | set(self._recent) | set(self._held))

    async def flush_once(self) -> None:
        """One round trip: refresh interest, take free leases, reconcile missed snapshots."""
        batch = self._recent
        who = self._recent_tenants
        self._recent = {}
        self._recent_tenants = {}
        for key, held in self._held.items():
            batch[key] = held.ref
            who.setdefault(key, set()).update(held.tenants)
        now = self._clock.monotonic()
        for key in batch:
            self._last_seen[key] = now
        if batch:
            results = await self._store.touch_many(
                (key, not self._scheduler.owns(key), self.revalidate_ms(ref))
                for key, ref in batch.items()
            )
            stale: list[str] = []
            for r in results:
                if r.fence:
                    self._scheduler.adopt(batch[r.key], r.fence, min(who.get(r.key, {"-"})))
                cached = self._cache.get(r.key)
                if r.version and (
                    cached is None
                    or cached.version < r.version
                    or r.fetched_ms - cached.fetched_ms > 2000
                ):
                    stale.append(r.key)
            if stale:
                for snap in await self._store.read_many(stale):
                    if snap is not None:
                        self._cache.put(snap)
            if self.census is not None:
                await self.census.publish(self._demand(batch, who))
        self._evict(now)

    def _demand(
        self, batch: dict[str, ResourceRef], who: dict[str, set[str]]
    ) -> dict[tuple[str, str], float]:
        """(tenant, key) → cadence interval for every watched resource that still needs polls."""
        rules = self._settings.cadence
        demand: dict[tuple[str, str], float] = {}
        for key in batch:
            snap = self._cache.get(key)
            if snap is not None and (snap.terminal or snap.expires_ms):
                continue  # terminal or negative: costs nothing
            interval = rules.default_interval_s
            if snap is not None and snap.has_body and not snap.error:
                elapsed = (snap.fetched_ms - snap.stage_since_ms) / 1000
                interval = poll_interval_s(snap.status, elapsed, rules) or interval
            for tenant in who.get(key, {"-"}):
                demand[(tenant, key)] = interval
        return demand

    def _evict(self, now: float) -> None:
        horizon = self._settings.linger_s + _EVICT_GRACE_S
        for key, seen in list(self._last_seen.items()):
            if now - seen > horizon and key not in self._held:
                del self._last_seen[key]
                if not self._cache.has_listeners(key):
                    self._cache.evict(key)

    async def run(self) -> None:
        """Flush every ``interest_flush_s`` (cancel to stop)."""
        while True:
            await asyncio.sleep(self._settings.interest_flush_s)
            try:
                await self.flush_once()
            except RedisError as exc:
                log.warning("interest_flush_failed", error=type(exc).__name__)
