"""What the tenant limits keep per tenant on one replica, the 429s they answer, and a stream's
hold on its slot."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from proxy.errors import TooManyRequests
from proxy.resources import ResourceRef
from proxy.tenancy.config import TenantConfig

if TYPE_CHECKING:
    from proxy.tenancy.access import Caller


@dataclass(eq=False)
class Permits:
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
    refill_started: float = 0.0  # loop time the refill in flight was asked for
    local_tokens: float = -1.0  # the per-replica fallback bucket (-1: not started)
    local_at: float = 0.0

    def take_local(self, now: float) -> bool:
        """One request from the per-replica bucket (the tenant's whole rate, burst one window)."""
        rate = self.limit / (self.window_ms / 1000)
        if self.local_tokens < 0:
            self.local_tokens, self.local_at = float(self.limit), now
        self.local_tokens = min(float(self.limit), self.local_tokens + (now - self.local_at) * rate)
        self.local_at = now
        if self.local_tokens < 1:
            self.retry_after_s = max(1, math.ceil((1 - self.local_tokens) / rate))
            return False
        self.local_tokens -= 1
        return True

    @staticmethod
    def for_rate(rps: float) -> Permits:
        # Below 1/s the window stretches to hold one request; above, whole requests per second.
        window_s = max(1.0, 1.0 / rps)
        limit = max(1, math.floor(rps * window_s + 1e-9))
        return Permits(
            window_ms=round(window_s * 1000), limit=limit, batch=max(1, math.ceil(limit / 10))
        )


@dataclass(eq=False)
class Watched:
    """One tenant's watched resources as this replica sees them."""

    expires: dict[str, float] = field(default_factory=dict)  # key -> local expiry (monotonic)
    dirty: set[str] = field(default_factory=set)  # touched since the last sync
    pinned: dict[str, int] = field(default_factory=dict)  # held by open streams
    cluster_count: int = 0  # distinct keys cluster-wide at the last sync
    cluster_members: frozenset[str] = frozenset()  # read only when the count nears the limit
    unsynced: set[str] = field(default_factory=set)  # keys new to the cluster, not yet counted

    def busy(self) -> bool:
        """True while anything is watched here or was, cluster-wide, at the last sync."""
        return bool(self.expires or self.pinned or self.cluster_count)

    def synced(self, count: int, members: frozenset[str], *, sent: Iterable[str]) -> None:
        """A sync wrote ``sent`` and read the cluster's ``count`` (and ``members``) back.

        The keys sent are in the count now; keys that lapsed here meanwhile are no longer ours
        to add. Keys new since the sync was sent stay uncounted until the next one.
        """
        self.cluster_count = count
        self.cluster_members = members
        self.unsynced.difference_update(sent)
        self.unsynced.intersection_update(self.expires)

    def expire_unpinned(self, now: float, linger_s: float) -> None:
        """Forget lapsed keys; keys open streams hold stay, a linger ahead, and are re-sent."""
        for key in [k for k, t in self.expires.items() if t <= now]:
            if key not in self.pinned:
                del self.expires[key]
        for key in self.pinned:
            self.expires[key] = now + linger_s
            self.dirty.add(key)


def over_limit(tenant: TenantConfig, limit: str, why: str, retry_after_s: int) -> TooManyRequests:
    """The 429 of one limit: which one, its value, and when to come back."""
    value = getattr(tenant, limit)
    return TooManyRequests(
        f"tenant {tenant.id} is over its {limit} limit ({value:g}): {why}",
        details={"limit": limit, "value": value},
        headers={"Retry-After": str(retry_after_s)},
    )


def over_rate(tenant: TenantConfig, permits: Permits) -> TooManyRequests:
    """The 429 of ``requests_per_second``."""
    why = f"retry after {permits.retry_after_s} s."
    return over_limit(tenant, "requests_per_second", why, permits.retry_after_s)


class HeldSlot(NamedTuple):
    """A stream's slot: whose, its member name in Redis, the resources it keeps watched."""

    tenant_id: str
    member: str
    pinned: tuple[str, ...]
    watched: Watched


class SlotKeeper(Protocol):
    """Who hands out stream slots (``TenantLimits``)."""

    async def take_slot(self, caller: Caller, refs: Iterable[ResourceRef]) -> HeldSlot | None: ...

    async def give_back(self, slot: HeldSlot) -> None: ...


class StreamHold:
    """``async with limits.stream(caller, refs)``, or ``take`` and ``release`` when the slot
    outlives the handler (an ``EventStream``'s body): a class rather than a generator-based
    context manager, which would cost a frame and a weak reference more per open stream."""

    __slots__ = ("_caller", "_limits", "_refs", "_slot")

    def __init__(self, limits: SlotKeeper, caller: Caller, refs: Iterable[ResourceRef]) -> None:
        self._limits, self._caller, self._refs = limits, caller, refs
        self._slot: HeldSlot | None = None

    async def take(self) -> None:
        """Take the slot (``TooManyRequests`` when none is free)."""
        self._slot = await self._limits.take_slot(self._caller, self._refs)
        self._refs = ()

    async def release(self) -> None:
        """Give the slot back (once; later calls do nothing)."""
        slot, self._slot = self._slot, None
        if slot is not None:
            await self._limits.give_back(slot)

    async def __aenter__(self) -> None:
        await self.take()

    async def __aexit__(self, *_: object) -> None:
        await self.release()


class _NoHold(StreamHold):
    """Open mode: no tenant, so no slot to take (one shared instance; open streams cost none)."""

    __slots__ = ()

    def __init__(self) -> None:
        pass

    async def take(self) -> None:
        pass

    async def release(self) -> None:
        pass


NO_HOLD: StreamHold = _NoHold()


def keys_in(args: Sequence[Any]) -> list[str]:
    """The resource keys of one tenant's watched-set refresh ([members_from, ms, key, ...])."""
    return [str(key) for key in args[2::2]]


def members_from(tenant: TenantConfig | None) -> int:
    """The watched count from which a sync reads the member list as well: only near the limit,
    so a resource another replica already watches is not refused as new."""
    return max(1, (tenant.max_watched if tenant is not None else 0) // 2)
