"""Interest: which resources this replica's clients watch, pushed to Redis once a second.

The request path only writes a dict entry; the flush loop turns those into one pipelined round
trip (``RedisStore.flush_interest``) that writes everything this replica knows of who watches
what: each resource's watch key (the linger) with the free leases taken for resources no replica
polls, the census entries of the fair share, and the tenant limits' watched sets and stream
slots. The leases, the census and the limits each prepare their part and take its answer back;
the flush notices snapshots this replica missed from the answer. The flush runs whenever any
part has something to write (open streams' slots are refreshed with nothing else watched). When
Redis fails, every part keeps its entries for the next flush.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from proxy.cadence import snapshot_interval_s
from proxy.clock import Clock
from proxy.resources import ResourceRef
from proxy.services.cache import SnapshotCache
from proxy.services.census import NO_CENSUS, FairShare
from proxy.services.leases import Leases
from proxy.settings import Settings
from proxy.store.errors import StoreError
from proxy.store.limits import NO_LIMITS_SYNC, LimitsSync, WatchedCount
from proxy.store.redis_store import RedisStore, TouchResult

log = structlog.get_logger("proxy.interest")

# Keep an unwatched key in memory a little past the linger, so a client that comes back soon
# is still answered from memory.
_EVICT_GRACE_S = 5.0


class FlushedLimits(Protocol):
    """The tenant limits' part of each flush (``TenantLimits``): what to write, what came back."""

    def sync_request(self) -> LimitsSync:
        """The watched sets and stream slots to write with this flush."""

    def sync_applied(self, request: LimitsSync, counts: Sequence[WatchedCount]) -> None:
        """``request`` was written; ``counts`` are what it read back."""

    def sync_failed(self, request: LimitsSync) -> None:
        """``request`` could not be written (send it again with the next flush)."""


class NoLimits:
    """No tenant limits (a tracker on its own, in tests): nothing to write."""

    def sync_request(self) -> LimitsSync:
        """Nothing."""
        return NO_LIMITS_SYNC

    def sync_applied(self, request: LimitsSync, counts: Sequence[WatchedCount]) -> None:
        """Nothing to apply."""

    def sync_failed(self, request: LimitsSync) -> None:
        """Nothing to keep."""


NO_LIMITS = NoLimits()


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
        leases: Leases,
        cache: SnapshotCache,
        settings: Settings,
        clock: Clock,
        census: FairShare = NO_CENSUS,
        limits: FlushedLimits = NO_LIMITS,
    ) -> None:
        self._store = store
        self._leases = leases
        self._cache = cache
        self._settings = settings
        self._clock = clock
        self._recent: dict[str, ResourceRef] = {}
        self._recent_tenants: dict[str, set[str]] = {}
        self._held: dict[str, _Held] = {}
        self.census = census
        self._limits = limits
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
        """One round trip: interest and free leases, the census, the tenant limits' sets and
        slots (none when nobody has anything to write); then reconcile missed snapshots."""
        batch, who = self._take_batch()
        now = self._clock.monotonic()
        for key in batch:
            self._last_seen[key] = now
        wanted = [
            (ref, self.revalidate_ms(ref), min(who.get(key, {"-"}))) for key, ref in batch.items()
        ]
        census = self.census.to_publish(self._demand(batch, who))
        limits = self._limits.sync_request()
        try:
            flushed = await self._store.flush_interest(
                self._leases.to_touch(wanted), census, limits
            )
        except StoreError:
            self._keep_for_next_flush(batch, who)
            self._limits.sync_failed(limits)
            raise
        self._leases.touched(wanted, flushed.touched)
        self._limits.sync_applied(limits, flushed.watched)
        await self._reread_missed(flushed.touched)
        self._evict(now)

    def _take_batch(self) -> tuple[dict[str, ResourceRef], dict[str, set[str]]]:
        """What was noted since the last flush plus every held resource, with their tenants."""
        batch = self._recent
        who = self._recent_tenants
        self._recent = {}
        self._recent_tenants = {}
        for key, held in self._held.items():
            batch[key] = held.ref
            who.setdefault(key, set()).update(held.tenants)
        return batch, who

    async def _reread_missed(self, results: list[TouchResult]) -> None:
        """Read the snapshots that are newer in Redis than here (a missed announcement)."""
        stale: list[str] = []
        for r in results:
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

    def _keep_for_next_flush(self, batch: dict[str, ResourceRef], who: dict[str, set[str]]) -> None:
        for key, ref in batch.items():
            if key in self._held:
                continue  # held interest is re-added on every flush anyway
            self._recent.setdefault(key, ref)
            self._recent_tenants.setdefault(key, set()).update(who.get(key, ()))

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
                is_list = ResourceRef.kind_of_key(key).list_cadence
                interval = snapshot_interval_s(snap, rules, is_list=is_list) or interval
            for tenant in who.get(key, {"-"}):
                demand[(tenant, key)] = interval
        return demand

    def _evict(self, now: float) -> None:
        horizon = self._settings.linger_s + _EVICT_GRACE_S
        for key, seen in list(self._last_seen.items()):
            # A resource this replica polls for others stays: its next poll would otherwise
            # read back from Redis what this replica wrote itself. It goes with the lease.
            if now - seen > horizon and key not in self._held and not self._leases.owns(key):
                del self._last_seen[key]
                if not self._cache.has_listeners(key):
                    self._cache.evict(key)

    async def run(self) -> None:
        """Flush every ``interest_flush_s`` (cancel to stop)."""
        while True:
            await asyncio.sleep(self._settings.interest_flush_s)
            try:
                await self.flush_once()
            except StoreError as exc:
                # Redis health logs the outage once (the tenant limits say they are local);
                # the interest of this round is kept in ``_recent`` and the limits' entries in
                # theirs, all sent with the next flush, so leases come back when Redis does.
                log.debug("interest_flush_failed", error=type(exc).__name__)
