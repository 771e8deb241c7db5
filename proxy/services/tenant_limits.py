"""Per-tenant limits: request rate across replicas, open streams, distinct watched resources.

In open mode (no tenant) every check passes. Each limit keeps the hot path in memory and talks
to Redis only in batches or in the background:

* ``requests_per_second``: a cluster-wide sliding-window log in Redis hands out permits in
  small batches that each replica spends locally; only a request that finds its replica's batch
  empty waits on Redis.
* ``max_watched``: a per-tenant sorted set in Redis (member = resource, score = expiry on the
  Redis clock), refreshed once per ``interest_flush_s``; replicas decide locally against the
  last count they read.
* ``max_streams``: a per-tenant sorted set of stream slots (score = expiry), taken and given back
  with one round trip each and kept alive by their holder, so a crashed replica's slots lapse.

Redis trouble never turns into client errors here: a limit that cannot reach Redis lets requests
through and logs it (the proxy's other paths report the outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from redis.exceptions import RedisError

from proxy.clock import Clock
from proxy.errors import TooManyRequests
from proxy.resources import ResourceRef
from proxy.settings import Settings
from proxy.store import keys
from proxy.store.redis_store import RedisStore
from proxy.tenant_config import TenantConfig

if TYPE_CHECKING:
    from proxy.web.access import Caller

log = structlog.get_logger("proxy.tenant_limits")

_REDIS_ERRORS = (RedisError, OSError, TimeoutError)
# After a failed Redis call the rate limit is skipped this long, so an outage costs one timeout
# per tenant per interval instead of one per request.
_FAIL_OPEN_S = 5.0
_WARN_EVERY_S = 10.0
# A replica asks for about this much of its recent request rate at a time (capped at the batch).
_BATCH_S = 0.1


_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
"""

# Take up to ARGV[3] permits from a sliding one-window log. KEYS: log (sorted set of grants,
# member "<count>:<uid>", score = Redis ms), running sum of the counts in the log.
# ARGV: window_ms, limit, want, uid. Returns {granted, retry_ms}; retry_ms is how long until the
# oldest grant leaves the window (0 when granted). Both keys live one window past the last grant.
_TAKE = (
    _NOW
    + """
local window = tonumber(ARGV[1])
local since = now - window
local sum = tonumber(redis.call('GET', KEYS[2]) or '0')
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', since)
if #old > 0 then
  for _, m in ipairs(old) do sum = sum - tonumber(string.match(m, '^(%d+):')) end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', since)
end
if sum < 0 or redis.call('ZCARD', KEYS[1]) == 0 then sum = 0 end
local free = tonumber(ARGV[2]) - sum
if free < 1 then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, math.max(1, math.ceil(tonumber(first[2]) + window - now))}
end
if free > tonumber(ARGV[3]) then free = tonumber(ARGV[3]) end
redis.call('ZADD', KEYS[1], now, free .. ':' .. ARGV[4])
redis.call('SET', KEYS[2], sum + free, 'PX', window + 1000)
redis.call('PEXPIRE', KEYS[1], window + 1000)
return {free, 0}
"""
)

# Take a stream slot. KEYS: slots. ARGV: member, ttl_ms, limit. Returns {taken (0/1), count}.
_SLOT_TAKE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[3]) then return {0, n} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + 1000)
return {1, n + 1}
"""
)

# Extend slots we still hold (never re-add one given back meanwhile). KEYS: slots.
# ARGV: ttl_ms, members...
_SLOT_REFRESH = (
    _NOW
    + """
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
  end
end
redis.call('PEXPIRE', KEYS[1], ttl + 1000)
return 0
"""
)

# Refresh watched resources and count the tenant's distinct ones. KEYS: watched.
# ARGV: members_from (return the members when the count reaches it), then (ms_left, key) pairs.
# Returns {count, members or {}}.
_WATCH_SYNC = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 2, #ARGV, 2 do
  local expiry = now + tonumber(ARGV[i])
  local current = redis.call('ZSCORE', KEYS[1], ARGV[i + 1])
  if not current or tonumber(current) < expiry then
    redis.call('ZADD', KEYS[1], expiry, ARGV[i + 1])
  end
end
local n = redis.call('ZCARD', KEYS[1])
if n == 0 then return {0, {}} end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(last[2]) - now) + 1000)
if n >= tonumber(ARGV[1]) then return {n, redis.call('ZRANGE', KEYS[1], 0, -1)} end
return {n, {}}
"""
)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(eq=False)
class _Permits:
    """This replica's share of one tenant's request rate."""

    window_ms: int
    limit: int  # permits per window, all replicas together
    batch: int  # most permits this replica holds at once
    left: int = 0
    denied_until: float = 0.0
    retry_after_s: int = 1
    open_until: float = 0.0
    arrivals: int = 0  # requests since the last refill, to size the next batch
    waiting: int = 0
    last_refill_at: float = -math.inf
    refill: asyncio.Task[None] | None = None

    @staticmethod
    def for_rate(rps: float) -> _Permits:
        # Below 1/s the window stretches to hold one request; above, whole requests per second.
        window_s = max(1.0, 1.0 / rps)
        limit = max(1, math.floor(rps * window_s + 1e-9))
        return _Permits(
            window_ms=round(window_s * 1000), limit=limit, batch=max(1, math.ceil(limit / 10))
        )


@dataclass(eq=False)
class _Watched:
    """One tenant's watched resources as this replica sees them."""

    expires: dict[str, float] = field(default_factory=dict)  # key -> local expiry (monotonic)
    dirty: set[str] = field(default_factory=set)  # touched since the last sync
    pinned: dict[str, int] = field(default_factory=dict)  # held by open streams
    cluster_count: int = 0  # distinct keys cluster-wide at the last sync
    cluster_members: frozenset[str] = frozenset()  # read only when the count nears the limit
    unsynced_new: int = 0  # keys new to the cluster added here since the last sync

    def busy(self) -> bool:
        return bool(self.expires or self.pinned or self.cluster_count)


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
        background: bool = True,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._background = background  # False: tests call ``sync()`` themselves
        redis = store.redis
        self._take_script = redis.register_script(_TAKE)
        self._slot_take = redis.register_script(_SLOT_TAKE)
        self._slot_refresh = redis.register_script(_SLOT_REFRESH)
        self._watch_sync = redis.register_script(_WATCH_SYNC)
        self._tenants = {t.id: t for t in settings.tenants}
        self._linger_s = settings.linger_s
        # Watched resources lapse within one linger; streams get the same hint.
        self._linger_retry_s = max(1, math.ceil(settings.linger_s))
        self._sync_s = settings.interest_flush_s
        self._slot_ttl_ms = int(settings.lease_ttl_s * 1000)
        self._permits: dict[str, _Permits] = {}
        self._watched: dict[str, _Watched] = {}
        self._slots: dict[str, dict[str, None]] = {}  # tenant -> slot members held here
        self._slots_refreshed: dict[str, float] = {}
        self._slot_ids = itertools.count(1)
        self._grant_ids = itertools.count(1)
        self._maintainer: asyncio.Task[None] | None = None
        self._releases: set[asyncio.Task[None]] = set()
        self._warned: dict[str, float] = {}

    # -- requests_per_second -----------------------------------------------------------------

    async def admit(self, caller: Caller) -> None:
        """Raise ``TooManyRequests`` (with Retry-After) when the tenant is over its request rate."""
        tenant = caller.tenant
        if tenant is None:
            return
        permits = self._permits.get(tenant.id)
        if permits is None:
            permits = self._permits[tenant.id] = _Permits.for_rate(tenant.requests_per_second)
        permits.arrivals += 1
        if permits.left:
            permits.left -= 1
            return
        now = self._clock.monotonic()
        if now < permits.denied_until:
            raise _over_rate(tenant, permits)
        if now < permits.open_until:
            return
        await self._admit_after_refill(tenant, permits)

    async def _admit_after_refill(self, tenant: TenantConfig, permits: _Permits) -> None:
        permits.waiting += 1
        try:
            while True:
                if permits.refill is None:
                    permits.refill = asyncio.create_task(self._refill(tenant, permits))
                # Shielded: one waiter leaving must not cancel the refill the others share.
                await asyncio.shield(permits.refill)
                now = self._clock.monotonic()
                if permits.left:
                    permits.left -= 1
                    return
                if now < permits.denied_until:
                    raise _over_rate(tenant, permits)
                if now < permits.open_until:
                    return
        finally:
            permits.waiting -= 1

    async def _refill(self, tenant: TenantConfig, permits: _Permits) -> None:
        try:
            asked_at = self._clock.monotonic()
            rate = permits.arrivals / max(asked_at - permits.last_refill_at, 1e-3)
            want = max(1, permits.waiting, math.ceil(rate * _BATCH_S))
            want = min(permits.batch, want)
            permits.arrivals = 0
            permits.last_refill_at = asked_at
            try:
                granted, retry_ms = await self._take(tenant, permits, want)
            except _REDIS_ERRORS as exc:
                self._warn("tenant_rate_unavailable", error=type(exc).__name__)
                permits.open_until = self._clock.monotonic() + _FAIL_OPEN_S
                return
            permits.left = granted
            if not granted:
                permits.denied_until = self._clock.monotonic() + retry_ms / 1000
                permits.retry_after_s = max(1, math.ceil(retry_ms / 1000))
        finally:
            permits.refill = None

    async def _take(self, tenant: TenantConfig, permits: _Permits, want: int) -> tuple[int, int]:
        """Ask the cluster-wide log for up to ``want`` permits: (granted, retry_ms)."""
        log_key = keys.tenant_rate_log(tenant.id)
        granted, retry_ms = await self._take_script(
            keys=[log_key, log_key + ":sum"],
            args=[
                permits.window_ms,
                permits.limit,
                want,
                f"{self._settings.replica_id}:{next(self._grant_ids)}",
            ],
        )
        return int(granted), int(retry_ms)

    # -- max_watched -------------------------------------------------------------------------

    def watch(self, caller: Caller, ref: ResourceRef) -> None:
        """Raise ``TooManyRequests`` when ``ref`` would exceed the tenant's ``max_watched``."""
        tenant = caller.tenant
        if tenant is None:
            return
        watched = self._watched.get(tenant.id)
        if watched is None:
            watched = self._watched[tenant.id] = _Watched()
        key = ref.key
        if key not in watched.expires:
            if key not in watched.cluster_members:
                count = watched.cluster_count + watched.unsynced_new
                if count >= tenant.max_watched:
                    raise _over_limit(
                        tenant,
                        "max_watched",
                        f"it already watches {count} distinct containers and jobs; new ones are "
                        "refused until some go unwatched.",
                        self._linger_retry_s,
                    )
                watched.unsynced_new += 1
            self._start_maintenance()
        watched.expires[key] = self._clock.monotonic() + self._linger_s
        watched.dirty.add(key)

    # -- max_streams -------------------------------------------------------------------------

    @asynccontextmanager
    async def stream(self, caller: Caller, refs: Iterable[ResourceRef] = ()) -> AsyncIterator[None]:
        """Hold one of the tenant's ``max_streams`` slots; ``TooManyRequests`` when none is free.

        ``refs`` (the stream's resources, already passed to ``watch``) stay counted as watched
        for as long as the stream is open, not just for the linger after it started.
        """
        tenant = caller.tenant
        if tenant is None:
            yield
            return
        member = f"{self._settings.replica_id}:{next(self._slot_ids)}"
        slots_key = keys.tenant_streams(tenant.id)
        try:
            taken, count = await self._slot_take(
                keys=[slots_key], args=[member, self._slot_ttl_ms, tenant.max_streams]
            )
        except _REDIS_ERRORS as exc:
            self._warn("tenant_streams_unavailable", error=type(exc).__name__)
            taken, count = 1, 0
        if not int(taken):
            raise _over_limit(
                tenant,
                "max_streams",
                f"{int(count)} streams are open; close one, or watch several resources on one "
                "/v1/stream.",
                self._linger_retry_s,
            )
        held = self._slots.setdefault(tenant.id, {})
        held[member] = None
        pinned = [ref.key for ref in refs]
        watched = self._watched.setdefault(tenant.id, _Watched())
        for key in pinned:
            watched.pinned[key] = watched.pinned.get(key, 0) + 1
        self._start_maintenance()
        try:
            yield
        finally:
            held.pop(member, None)
            until = self._clock.monotonic() + self._linger_s
            for key in pinned:
                left = watched.pinned.get(key, 0) - 1
                if left > 0:
                    watched.pinned[key] = left
                else:
                    watched.pinned.pop(key, None)
                    watched.expires[key] = until
            # A task of its own, so the slot is given back even when this one is cancelled.
            release = asyncio.create_task(self._release_slot(slots_key, member))
            self._releases.add(release)
            release.add_done_callback(self._releases.discard)
            await asyncio.shield(release)

    async def _release_slot(self, slots_key: str, member: str) -> None:
        try:
            await self._store.redis.zrem(slots_key, member)
        except _REDIS_ERRORS as exc:
            # The slot lapses by itself once nobody refreshes it.
            self._warn("tenant_streams_unavailable", error=type(exc).__name__)

    # -- background sync ---------------------------------------------------------------------

    async def sync(self) -> None:
        """One maintenance pass: sync watched sets, refresh stream slots (one round trip)."""
        now = self._clock.monotonic()
        pipe = self._store.redis.pipeline(transaction=False)
        sent: list[tuple[_Watched, set[str], int]] = []
        for tenant_id, watched in list(self._watched.items()):
            for key in [k for k, t in watched.expires.items() if t <= now]:
                if key not in watched.pinned:
                    del watched.expires[key]
            for key in watched.pinned:
                watched.expires[key] = now + self._linger_s
                watched.dirty.add(key)
            if not watched.busy():
                del self._watched[tenant_id]
                continue
            args: list[Any] = [self._members_from(tenant_id)]
            for key in watched.dirty:
                left_s = watched.expires.get(key, 0.0) - now
                if left_s > 0:
                    args += [int(left_s * 1000), key]
            sent.append((watched, watched.dirty, watched.unsynced_new))
            watched.dirty = set()
            await self._watch_sync(keys=[keys.tenant_watched(tenant_id)], args=args, client=pipe)
        queued = len(sent)
        refresh_s = self._slot_ttl_ms / 3000
        for tenant_id, held in list(self._slots.items()):
            if not held:
                del self._slots[tenant_id]
                self._slots_refreshed.pop(tenant_id, None)
                continue
            if now - self._slots_refreshed.get(tenant_id, -math.inf) < refresh_s:
                continue
            self._slots_refreshed[tenant_id] = now
            await self._slot_refresh(
                keys=[keys.tenant_streams(tenant_id)], args=[self._slot_ttl_ms, *held], client=pipe
            )
            queued += 1
        if not queued:
            return
        try:
            rows = await pipe.execute()
        except _REDIS_ERRORS:
            for watched, dirty, _ in sent:
                watched.dirty |= dirty  # try again next pass
            raise
        for (watched, _, new_sent), row in zip(sent, rows, strict=False):
            watched.cluster_count = int(row[0])
            watched.cluster_members = frozenset(_text(m) for m in row[1])
            watched.unsynced_new = max(0, watched.unsynced_new - new_sent)

    def _members_from(self, tenant_id: str) -> int:
        # Member lists are read only when the count is within reach of the limit, so a resource
        # another replica already watches is not refused as new.
        tenant = self._tenants.get(tenant_id)
        return max(1, (tenant.max_watched if tenant is not None else 0) // 2)

    def _busy(self) -> bool:
        return any(w.busy() for w in self._watched.values()) or any(self._slots.values())

    def _start_maintenance(self) -> None:
        if self._background and self._maintainer is None:
            self._maintainer = asyncio.get_running_loop().create_task(
                self._maintain(), name="tenant-limits"
            )

    async def _maintain(self) -> None:
        """Sync every ``interest_flush_s`` while this replica has anything to keep."""
        try:
            while self._busy():
                await asyncio.sleep(self._sync_s)
                try:
                    await self.sync()
                except _REDIS_ERRORS as exc:
                    self._warn("tenant_limits_sync_failed", error=type(exc).__name__)
        finally:
            self._maintainer = None

    async def aclose(self) -> None:
        """Stop the background sync and wait for slot releases in flight (shutdown)."""
        if self._maintainer is not None:
            self._maintainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintainer
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)

    def _warn(self, event: str, **fields: Any) -> None:
        now = self._clock.monotonic()
        if now - self._warned.get(event, -math.inf) >= _WARN_EVERY_S:
            self._warned[event] = now
            log.warning(event, **fields)


def _over_limit(tenant: TenantConfig, limit: str, why: str, retry_after_s: int) -> TooManyRequests:
    value = getattr(tenant, limit)
    return TooManyRequests(
        f"tenant {tenant.id} is over its {limit} limit ({value:g}): {why}",
        details={"limit": limit, "value": value},
        headers={"Retry-After": str(retry_after_s)},
    )


def _over_rate(tenant: TenantConfig, permits: _Permits) -> TooManyRequests:
    why = f"retry after {permits.retry_after_s} s."
    return _over_limit(tenant, "requests_per_second", why, permits.retry_after_s)
