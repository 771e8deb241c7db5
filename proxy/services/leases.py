"""This replica's leases, and every lease operation the services do, in one place.

A resource is polled only by the replica holding its lease; each lease comes with a fence, a
number that only grows, which every write of that holder carries (the fenced compare-and-set).
The operations, by name:

* ``touch`` / ``take``: refresh interest and take the lease where it is free (cold fetches,
  webhook refreshes; the interest flush sends ``to_touch`` with its other writes and hands the
  answers to ``touched``); a lease taken is adopted at once.
* ``adopt``: start holding a lease under its fence (a newer fence replaces an older one).
* ``claim``: pass the poll gate under the lease (a lost lease is forgotten).
* ``renew`` (all of them), ``hand_back`` (one: terminal, idle), ``hand_back_all`` (shutdown).
* ``forget``: drop a lease that is no longer ours (lost, or a write fenced out).

The scheduler hears of adoptions and of leases forgotten (``on_adopt``, ``on_forget``) to keep
its timers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from proxy.resources import ResourceRef
from proxy.store.errors import StoreError
from proxy.store.redis_store import BudgetPolicy, Claim, RedisStore, Touch, TouchResult

log = structlog.get_logger("proxy.leases")


@dataclass
class Lease:
    """A lease this replica holds, and the state of its poll loop."""

    ref: ResourceRef
    fence: int
    token: str
    failures: int = 0
    cold: bool = True  # the first poll after taking the lease only needs the floor
    in_flight: bool = False
    tenant: str = "-"  # who asked for it first (pays for the cold fetch)
    last_started: float | None = None  # local monotonic time of the last poll that went out


# (resource, revalidate_after_ms (-1: a terminal snapshot is never polled again), tenant).
Wanted = tuple[ResourceRef, int, str]


def _ignore_lease(lease: Lease) -> None:
    return None


def _ignore_key(key: str) -> None:
    return None


class Leases:
    """The leases this replica holds, by resource key."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._held: dict[str, Lease] = {}
        self.on_adopt: Callable[[Lease], None] = _ignore_lease
        self.on_forget: Callable[[str], None] = _ignore_key

    def __len__(self) -> int:
        return len(self._held)

    def get(self, key: str) -> Lease | None:
        """The lease held for ``key``, if any."""
        return self._held.get(key)

    def owns(self, key: str) -> bool:
        """True while this replica holds the lease for ``key``."""
        return key in self._held

    def keys(self) -> list[str]:
        """Keys whose lease this replica holds."""
        return list(self._held)

    def held(self) -> list[Lease]:
        """Every lease held."""
        return list(self._held.values())

    async def touch(self, wanted: Sequence[Wanted]) -> list[TouchResult]:
        """Refresh interest in each resource and take the leases nobody holds. One round trip.

        Leases this replica holds already are not asked for; those taken are adopted at once.
        (The interest flush sends the same with its other writes: ``to_touch``, ``touched``.)
        """
        results = await self._store.touch_many(self.to_touch(wanted))
        self.touched(wanted, results)
        return results

    def to_touch(self, wanted: Sequence[Wanted]) -> list[Touch]:
        """What a touch of ``wanted`` asks the store: no lease for those held here already."""
        return [(ref.key, ref.key not in self._held, reval_ms) for ref, reval_ms, _ in wanted]

    def touched(self, wanted: Sequence[Wanted], results: Sequence[TouchResult]) -> None:
        """Adopt the leases a touch of ``wanted`` took (``results`` in the same order)."""
        for (ref, _, tenant), result in zip(wanted, results, strict=True):
            if result.fence:
                self.adopt(ref, result.fence, tenant)

    async def take(self, ref: ResourceRef, *, revalidate_ms: int, tenant: str = "-") -> TouchResult:
        """``touch`` for one resource: its lease is ours if ``fence`` is set (who holds it else)."""
        [touched] = await self.touch([(ref, revalidate_ms, tenant)])
        return touched

    def adopt(self, ref: ResourceRef, fence: int, tenant: str = "-") -> Lease | None:
        """Hold ``ref``'s lease under ``fence`` (None when we hold it under this one or newer)."""
        current = self._held.get(ref.key)
        if current is not None and current.fence >= fence:
            return None
        lease = self._held[ref.key] = Lease(ref, fence, self._store.token(fence), tenant=tenant)
        self.on_adopt(lease)
        return lease

    def forget(self, lease: Lease) -> None:
        """Stop holding ``lease`` without telling Redis (it is not ours any more).

        A no-op when a newer lease of the same resource was adopted meanwhile.
        """
        key = lease.ref.key
        if self._held.get(key) is lease:
            del self._held[key]
            self.on_forget(key)

    async def claim(self, lease: Lease, *, gap_ms: int, tenant: str, budget: BudgetPolicy) -> Claim:
        """Pass the poll gate under ``lease`` (somebody must be watching); "lost" forgets it."""
        claim = await self._store.claim(
            lease.ref.key,
            lease.token,
            gap_ms=gap_ms,
            require_watch=True,
            tenant=tenant,
            tenant_budget=budget,
        )
        if claim.verdict == "lost":
            self.forget(lease)
        return claim

    async def renew(self) -> set[str]:
        """Extend every lease held; forget (and return) the ones that were lost."""
        tokens = {key: lease.token for key, lease in self._held.items()}
        lost = await self._store.renew_many(tokens)
        for key in lost:
            lease = self._held.get(key)
            if lease is not None and lease.token == tokens[key]:
                log.info("lease_lost", key=key)
                self.forget(lease)
        return lost

    async def hand_back(self, lease: Lease) -> None:
        """Stop holding ``lease`` and release it in Redis, so another replica may take it."""
        self.forget(lease)
        try:
            await self._store.release(lease.ref.key, lease.token)
        except StoreError as exc:
            # The lease expires on its own; nothing is lost but a little time.
            log.warning("lease_release_failed", key=lease.ref.key, error=type(exc).__name__)

    async def hand_back_all(self) -> None:
        """Release every lease in one round trip (shutdown: another replica takes over at once)."""
        tokens = {key: lease.token for key, lease in self._held.items()}
        for lease in list(self._held.values()):
            self.forget(lease)
        try:
            await self._store.release_many(tokens)
        except StoreError as exc:
            log.warning("lease_release_failed", count=len(tokens), error=type(exc).__name__)
