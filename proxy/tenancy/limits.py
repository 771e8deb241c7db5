"""Per-tenant limits: request rate across replicas, open streams, distinct watched resources.

In open mode (no tenant) every check passes. Each limit keeps the hot path in memory and talks
to Redis only in batches or in the background:

* ``requests_per_second``: a cluster-wide sliding-window log in Redis hands out permits in small
  batches each replica spends locally; only a request that finds its batch empty waits on Redis.
* ``max_watched``: a per-tenant sorted set in Redis (member = resource, score = expiry on the
  Redis clock), refreshed by every interest flush; replicas decide against the last count read.
* ``max_streams``: a per-tenant sorted set of stream slots (score = expiry), taken and given back
  with one round trip each and kept alive by their holder, so a crashed replica's slots lapse.

No loop of their own: the interest flush writes what ``sync_request`` asks in its own round trip
and reports back (``sync_applied``; ``sync_failed`` keeps the entries for the next flush).
``sync`` does the same alone. Redis trouble never becomes a client error or a wait: while Redis
is down (or over 200 ms late with permits) each replica enforces the limits alone, says so once
in the log, and goes back to the cluster-wide limits when Redis answers.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from proxy.clock import Clock
from proxy.resources import ResourceRef
from proxy.settings import Settings
from proxy.store.base import text
from proxy.store.errors import StoreError
from proxy.store.redis_store import LimitsSync, RedisStore, WatchedCount
from proxy.tenancy.config import TenantConfig
from proxy.tenancy.limit_state import (
    NO_HOLD,
    HeldSlot,
    Permits,
    StreamHold,
    Watched,
    keys_in,
    members_from,
    over_limit,
    over_rate,
)

if TYPE_CHECKING:
    from proxy.tenancy.access import Caller

log = structlog.get_logger("proxy.tenancy.limits")

# After a failed Redis call the rate limit is enforced locally this long, so an outage costs one
# timeout per tenant per interval instead of one per request.
_FAIL_OPEN_S = 5.0
# A request that finds its batch empty waits this long at most for Redis to refill it; past
# that it is admitted (or refused) by the local limit, so a paused Redis never shows in latency.
_REFILL_WAIT_S = 0.2
_WARN_EVERY_S = 10.0
# A replica asks for about this much of its recent request rate at a time (capped at the batch).
_BATCH_S = 0.1


class TenantLimits:
    """Enforces each tenant's ``requests_per_second``, ``max_streams`` and ``max_watched``.

    Guarantees (R = number of replicas, b = the tenant's batch, ``ceil(rps / 10)``):

    * Rate: in any one-second window the whole cluster admits at most ``rps + R * b`` requests
      of a tenant. Redis grants at most ``rps`` permits in any second (a sliding-window log on
      the Redis clock, so bursts up to ``rps`` pass), and the admitted requests of a window are
      those granted in it plus at most one unspent batch per replica from before. Batches are
      sized to the replica's recent request rate (at most b), so a replica that sees few
      requests holds few permits. Rates are whole requests per second (rounded down); below
      1/s the window stretches to ``1 / rps`` seconds holding one request.
    * Watched: cluster-wide, eventually consistent: each replica checks a new resource against
      the count it read at its last sync (every ``interest_flush_s``) plus what it added since,
      so the set can overshoot by what other replicas add within one sync interval. A resource
      already watched anywhere in the cluster at the last sync is always accepted.
    * Streams: exact across replicas (one atomic script per open); a slot lapses
      ``lease_ttl_s`` after its holder stops refreshing it (a crashed replica).
    """

    def __init__(
        self,
        *,
        store: RedisStore,
        settings: Settings,
        clock: Clock,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._tenants = {t.id: t for t in settings.tenants}
        self._linger_s = settings.linger_s
        # Watched resources lapse within one linger; streams get the same hint.
        self._linger_retry_s = max(1, math.ceil(settings.linger_s))
        self._slot_ttl_ms = int(settings.lease_ttl_s * 1000)
        self._permits: dict[str, Permits] = {}
        self._watched: dict[str, Watched] = {}
        self._slots: dict[str, dict[str, None]] = {}  # tenant -> slot members held here
        self._slots_refreshed: dict[str, float] = {}
        self._slot_ids = itertools.count(1)
        self._grant_ids = itertools.count(1)
        self._releases: set[asyncio.Task[None]] = set()
        self._warned: dict[str, float] = {}
        self._local = False  # enforcing per-replica limits because Redis is unavailable

    # -- requests_per_second -----------------------------------------------------------------

    async def admit(self, caller: Caller) -> None:
        """Raise ``TooManyRequests`` (with Retry-After) when the tenant is over its request rate."""
        tenant = caller.tenant
        if tenant is None or self.try_admit(caller):
            return
        permits = self._permits.get(tenant.id)
        if permits is None:
            permits = self._permits[tenant.id] = Permits.for_rate(tenant.requests_per_second)
        permits.arrivals += 1
        now = self._clock.monotonic()
        if now < permits.denied_until:
            raise over_rate(tenant, permits)
        if now < permits.open_until or not self._store.health.up:
            self._admit_locally(tenant, permits, now)
            return
        await self._admit_after_refill(tenant, permits)

    def try_admit(self, caller: Caller) -> bool:
        """``admit`` when a permit is in hand (no wait, nothing raised); False changes nothing."""
        tenant = caller.tenant
        if tenant is None:
            return True
        permits = self._permits.get(tenant.id)
        if permits is None or not permits.left:
            return False
        permits.arrivals += 1
        permits.left -= 1
        return True

    def _admit_locally(self, tenant: TenantConfig, permits: Permits, now: float) -> None:
        self._note_local()
        if not permits.take_local(now):
            raise over_rate(tenant, permits)

    def _cluster_again(self) -> None:
        if self._local:
            self._local = False
            log.info("tenant_limits_cluster", hint="cluster-wide limits are back")

    async def _admit_after_refill(self, tenant: TenantConfig, permits: Permits) -> None:
        permits.waiting += 1
        try:
            while True:
                loop = asyncio.get_running_loop()
                if permits.refill is None:
                    permits.refill = asyncio.create_task(self._refill(tenant, permits))
                    permits.refill_started = loop.time()
                # Shielded: one waiter leaving must not cancel the refill the others share.
                try:
                    left_s = permits.refill_started + _REFILL_WAIT_S - loop.time()
                    async with asyncio.timeout(max(0.0, left_s)):
                        await asyncio.shield(permits.refill)
                except TimeoutError:
                    # Redis is slow or paused: decide here; the refill goes on for later ones.
                    self._admit_locally(tenant, permits, self._clock.monotonic())
                    return
                now = self._clock.monotonic()
                if permits.left:
                    permits.left -= 1
                    return
                if now < permits.denied_until:
                    raise over_rate(tenant, permits)
                if now < permits.open_until:
                    self._admit_locally(tenant, permits, now)
                    return
        finally:
            permits.waiting -= 1

    async def _refill(self, tenant: TenantConfig, permits: Permits) -> None:
        try:
            asked_at = self._clock.monotonic()
            rate = permits.arrivals / max(asked_at - permits.last_refill_at, 1e-3)
            want = max(1, permits.waiting, math.ceil(rate * _BATCH_S))
            want = min(permits.batch, want)
            permits.arrivals = 0
            permits.last_refill_at = asked_at
            try:
                granted, retry_ms = await self._take(tenant, permits, want)
            except StoreError:
                permits.open_until = self._clock.monotonic() + _FAIL_OPEN_S
                return
            self._cluster_again()
            permits.left = granted
            if not granted:
                permits.denied_until = self._clock.monotonic() + retry_ms / 1000
                permits.retry_after_s = max(1, math.ceil(retry_ms / 1000))
        finally:
            permits.refill = None

    async def _take(self, tenant: TenantConfig, permits: Permits, want: int) -> tuple[int, int]:
        """Ask the cluster-wide log for up to ``want`` permits: (granted, retry_ms)."""
        uid = f"{self._settings.replica_id}:{next(self._grant_ids)}"
        return await self._store.take_permits(
            tenant.id, window_ms=permits.window_ms, limit=permits.limit, want=want, uid=uid
        )

    # -- max_watched -------------------------------------------------------------------------

    def watch(self, caller: Caller, ref: ResourceRef) -> None:
        """Raise ``TooManyRequests`` when ``ref`` would exceed the tenant's ``max_watched``."""
        tenant = caller.tenant
        if tenant is None:
            return
        watched = self._watched.get(tenant.id)
        if watched is None:
            watched = self._watched[tenant.id] = Watched()
        key = ref.key
        if key not in watched.expires and key not in watched.cluster_members:
            count = watched.cluster_count + len(watched.unsynced)
            if count >= tenant.max_watched:
                raise over_limit(
                    tenant,
                    "max_watched",
                    f"it already watches {count} distinct containers and jobs; new ones are "
                    "refused until some go unwatched.",
                    self._linger_retry_s,
                )
            watched.unsynced.add(key)
        watched.expires[key] = self._clock.monotonic() + self._linger_s
        watched.dirty.add(key)

    # -- max_streams -------------------------------------------------------------------------

    def stream(self, caller: Caller, refs: Iterable[ResourceRef] = ()) -> StreamHold:
        """``async with``: one of the tenant's ``max_streams`` slots while a stream is open
        (``TooManyRequests`` when none is free); ``refs`` (already passed to ``watch``) stay
        counted as watched while it is open, not just for the linger after it started."""
        if caller.tenant is None:
            return NO_HOLD
        return StreamHold(self, caller, refs)

    async def take_slot(self, caller: Caller, refs: Iterable[ResourceRef]) -> HeldSlot | None:
        """Take a stream slot for ``caller`` (None in open mode); see ``stream``."""
        tenant = caller.tenant
        if tenant is None:
            return None
        member = f"{self._settings.replica_id}:{next(self._slot_ids)}"
        held = self._slots.setdefault(tenant.id, {})
        try:
            taken, count = await self._store.take_stream_slot(
                tenant.id, member, ttl_ms=self._slot_ttl_ms, limit=tenant.max_streams
            )
        except StoreError:
            # Per replica until Redis answers: this replica's own streams against the limit.
            self._note_local()
            count = len(held)
            taken = count < tenant.max_streams
        if not taken:
            raise over_limit(
                tenant,
                "max_streams",
                f"{count} streams are open; close one, or watch several resources on one "
                "/v1/stream.",
                self._linger_retry_s,
            )
        held[member] = None
        pinned = tuple(ref.key for ref in refs)
        watched = self._watched.setdefault(tenant.id, Watched())
        for key in pinned:
            watched.pinned[key] = watched.pinned.get(key, 0) + 1
        return HeldSlot(tenant.id, member, pinned, watched)

    async def give_back(self, slot: HeldSlot) -> None:
        """End a ``take_slot``: the slot is free and the resources linger as watched."""
        self._slots.get(slot.tenant_id, {}).pop(slot.member, None)
        watched = slot.watched
        until = self._clock.monotonic() + self._linger_s
        for key in slot.pinned:
            left = watched.pinned.get(key, 0) - 1
            if left > 0:
                watched.pinned[key] = left
            else:
                watched.pinned.pop(key, None)
                watched.expires[key] = until
        # A task of its own, so the slot is given back even when this one is cancelled.
        release = asyncio.create_task(self._release_slot(slot.tenant_id, slot.member))
        self._releases.add(release)
        release.add_done_callback(self._releases.discard)
        await asyncio.shield(release)

    def _note_local(self) -> None:
        if not self._local:
            self._local = True
            log.warning(
                "tenant_limits_local",
                reason="redis unavailable",
                hint="rate and stream limits are per replica until Redis answers",
            )

    async def _release_slot(self, tenant_id: str, member: str) -> None:
        try:
            await self._store.release_stream_slot(tenant_id, member)
        except StoreError as exc:
            # The slot lapses by itself once nobody refreshes it.
            self._warn("tenant_streams_unavailable", error=type(exc).__name__)

    # -- the interest flush's part: watched sets and stream slots ---------------------------

    def sync_request(self) -> LimitsSync:
        """What the next interest flush writes for the limits (no Redis here).

        Each busy tenant's watched keys touched since the last pass (with their time left; its
        count is read back), and the stream slots held here that are due a refresh. What it
        returns counts as sent: ``sync_failed`` puts it back.
        """
        now = self._clock.monotonic()
        return LimitsSync(
            watched=self._watched_to_sync(now),
            slots=self._slots_to_refresh(now),
            slot_ttl_ms=self._slot_ttl_ms,
        )

    def sync_applied(self, request: LimitsSync, counts: Sequence[WatchedCount]) -> None:
        """A flush wrote ``request``: take the cluster-wide counts it read back."""
        if request.empty():
            return
        self._cluster_again()
        for (tenant_id, args), (count, members) in zip(request.watched, counts, strict=True):
            watched = self._watched.get(tenant_id)
            if watched is not None:
                members_now = frozenset(text(m) for m in members)
                watched.synced(count, members_now, sent=keys_in(args))

    def sync_failed(self, request: LimitsSync) -> None:
        """A flush of ``request`` failed: send it again next time, decide locally meanwhile."""
        if request.empty():
            return
        self._note_local()
        for tenant_id, args in request.watched:
            watched = self._watched.get(tenant_id)
            if watched is not None:
                watched.dirty.update(keys_in(args))
        for tenant_id, _ in request.slots:
            self._slots_refreshed.pop(tenant_id, None)  # due again at the next flush

    async def sync(self) -> None:
        """``sync_request`` written on its own (one round trip), without an interest flush."""
        request = self.sync_request()
        try:
            flushed = await self._store.flush_interest((), {}, request)
        except StoreError:
            self.sync_failed(request)
            raise
        self.sync_applied(request, flushed.watched)

    def _watched_to_sync(self, now: float) -> list[tuple[str, list[Any]]]:
        """Per busy tenant: [members_from, ms_left, key, ...] of the keys touched since the last
        pass (idle tenants are forgotten)."""
        calls: list[tuple[str, list[Any]]] = []
        for tenant_id, watched in list(self._watched.items()):
            watched.expire_unpinned(now, self._linger_s)
            if not watched.busy():
                del self._watched[tenant_id]
                continue
            args: list[Any] = [members_from(self._tenants.get(tenant_id))]
            for key in watched.dirty:
                left_s = watched.expires.get(key, 0.0) - now
                if left_s > 0:
                    args += [int(left_s * 1000), key]
            watched.dirty = set()
            calls.append((tenant_id, args))
        return calls

    def _slots_to_refresh(self, now: float) -> list[tuple[str, list[str]]]:
        """The stream slots held here that are due a refresh (a third of their TTL)."""
        refresh_s = self._slot_ttl_ms / 3000
        calls: list[tuple[str, list[str]]] = []
        for tenant_id, held in list(self._slots.items()):
            if not held:
                del self._slots[tenant_id]
                self._slots_refreshed.pop(tenant_id, None)
                continue
            if now - self._slots_refreshed.get(tenant_id, -math.inf) < refresh_s:
                continue
            self._slots_refreshed[tenant_id] = now
            calls.append((tenant_id, list(held)))
        return calls

    async def aclose(self) -> None:
        """Wait for the slot releases in flight (shutdown)."""
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)

    def _warn(self, event: str, **fields: Any) -> None:
        now = self._clock.monotonic()
        if now - self._warned.get(event, -math.inf) >= _WARN_EVERY_S:
            self._warned[event] = now
            log.warning(event, **fields)
