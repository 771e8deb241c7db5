"""The watch census: who watches what, cluster-wide, turned into fair poll intervals.

Every replica writes its (tenant, resource, cadence interval) entries into one Redis hash on each
interest flush (``to_publish`` prepares them; the flush sends them with its other writes in one
round trip), and every few seconds reads the whole hash back, drops expired entries and runs
the pure max-min allocation. Each replica so knows the same fair interval for every resource,
whichever replica holds its lease.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Protocol

import structlog

from proxy.clock import Clock
from proxy.fair_share import Allocation, Demand, allocate
from proxy.settings import Settings
from proxy.store.errors import StoreError
from proxy.store.redis_store import BudgetPolicy, RedisStore

log = structlog.get_logger("proxy.census")

# Leave a little of the budget for cold fetches and lastError look-ups, which are not scheduled.
_SCHEDULED_SHARE = 0.95
_TENANT_HEADROOM = 1.1


class FairShare(Protocol):
    """What the scheduler and the interest flush ask of the census."""

    def interval_for(self, key: str) -> float | None:
        """The fair interval of ``key`` (None: no stretch)."""

    def payer(self, key: str, hint: str) -> str:
        """Who pays for polling ``key``."""

    def tenant_budget(self, tenant: str) -> BudgetPolicy:
        """The GCRA a poll paid by ``tenant`` must also pass."""

    def tenants_of(self, key: str) -> tuple[str, ...]:
        """The tenants watching ``key``."""

    def to_publish(self, demand: Mapping[tuple[str, str], float]) -> dict[str, str]:
        """This replica's demand as census hash entries, for the interest flush to write."""


class NoCensus:
    """The census when fair sharing is off (a scheduler on its own, in tests): all no-ops."""

    def interval_for(self, key: str) -> float | None:
        """No fair interval: the cadence alone."""
        return None

    def payer(self, key: str, hint: str) -> str:
        """The tenant that asked first pays."""
        return hint

    def tenant_budget(self, tenant: str) -> BudgetPolicy:
        """No per-tenant bucket; the shared one is all."""
        return BudgetPolicy()

    def tenants_of(self, key: str) -> tuple[str, ...]:
        """Nobody known."""
        return ()

    def to_publish(self, demand: Mapping[tuple[str, str], float]) -> dict[str, str]:
        """Nothing to record."""
        return {}


NO_CENSUS = NoCensus()


class Census:
    """Publishes local demand and computes the cluster's fair intervals."""

    def __init__(self, *, store: RedisStore, settings: Settings, clock: Clock) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._weights = {t.id: t.weight for t in settings.tenants}
        self._total_weight = sum(self._weights.values()) or 1.0
        self._budget_per_s = settings.budget_per_min / 60.0 * _SCHEDULED_SHARE
        self._ttl_ms = int(settings.linger_s * 1000)
        self.allocation = Allocation({}, {}, {}, {}, {})
        self.on_change: list[Callable[[], object]] = []

    def interval_for(self, key: str) -> float | None:
        """The fair interval of ``key`` (None when the census does not know it yet)."""
        return self.allocation.intervals_s.get(key)

    def payer(self, key: str, hint: str) -> str:
        """Who pays for polling ``key``: its best-funded watcher, else ``hint``."""
        tenants = self.allocation.tenants_of.get(key)
        if not tenants:
            return hint
        rates = self.allocation.tenant_rate
        return max(tenants, key=lambda t: (rates.get(t, 0.0), t))

    def tenant_budget(self, tenant: str) -> BudgetPolicy:
        """A GCRA at the tenant's fair rate plus its weight's part of what nobody is using.

        The spare part matters when the budget is not contended: the census lags demand by a
        flush and a refresh, and a bucket held at the demand it last saw would hold back the
        polls of a tenant that has just started watching more. Under contention nothing is
        spare and the bucket is the fair rate. In open mode (no tenants configured) there is no
        per-tenant bucket: the shared one is all.
        """
        if not self._weights:
            return BudgetPolicy()
        rates = self.allocation.tenant_rate
        spare = max(0.0, self._budget_per_s - sum(rates.values()))
        weight = self._weights.get(tenant, 1.0) / self._total_weight
        rate = rates.get(tenant, 0.0) + spare * weight
        # 10% above that rate: the tenant's resources, each at its fair interval, add up to
        # exactly its fair rate, and a bucket they saturate would let jitter starve an unlucky
        # one. The bucket is there to stop cold-fetch storms; the shared bucket is the hard cap.
        interval_ms = int(1000 / max(rate * _TENANT_HEADROOM, 1e-6)) + 1
        # One spare slot absorbs scheduling jitter without letting a tenant burst ahead.
        return BudgetPolicy(interval_ms=interval_ms, burst_ms=interval_ms)

    def tenants_of(self, key: str) -> tuple[str, ...]:
        """The tenants watching ``key`` (who pays for its polls)."""
        return self.allocation.tenants_of.get(key, ())

    def to_publish(self, demand: Mapping[tuple[str, str], float]) -> dict[str, str]:
        """(tenant, key) → cadence interval of this flush as census hash entries.

        "tenant|key" → "expiry_ms|interval_ms", expiring one linger from now (wall clock).
        """
        if not demand:
            return {}
        expiry = int(self._clock.wall() * 1000) + self._ttl_ms
        return {
            f"{tenant}|{key}": f"{expiry}|{int(interval * 1000)}"
            for (tenant, key), interval in demand.items()
        }

    async def refresh(self) -> Allocation:
        """Read the census, prune expired entries and recompute the allocation."""
        raw = await self._store.census_read()
        now_ms = int(self._clock.wall() * 1000)
        demands: list[Demand] = []
        expired: list[bytes] = []
        for field, value in raw.items():
            try:
                expiry_s, interval_s = value.decode().split("|")
                tenant, key = field.decode().split("|", 1)
            except ValueError:
                expired.append(field)
                continue
            if int(expiry_s) < now_ms:
                expired.append(field)
                continue
            demands.append(Demand(tenant, key, int(interval_s) / 1000))
        if expired:
            await self._store.census_prune(expired)
        self.allocation = allocate(demands, self._weights, self._budget_per_s)
        for callback in self.on_change:
            callback()
        return self.allocation

    def tenant_view(self) -> dict[str, dict[str, float]]:
        """Per tenant: resources watched, demand and allocation (requests/min), mean interval."""
        a = self.allocation
        view: dict[str, dict[str, float]] = {}
        for tenant, demand in a.tenant_demand.items():
            rate = a.tenant_rate.get(tenant, 0.0)
            count = a.tenant_resources.get(tenant, 0)
            view[tenant] = {
                "resources": count,
                "demand_per_min": round(demand * 60, 2),
                "allocated_per_min": round(rate * 60, 2),
                "effective_interval_s": round(count / rate, 2) if rate > 0 else 0.0,
            }
        return view

    async def run(self, period_s: float = 2.0, log_every: int = 15) -> None:
        """Recompute every ``period_s``; log each tenant's share every ``log_every`` rounds."""
        rounds = 0
        while True:
            try:
                await self.refresh()
            except StoreError as exc:
                log.warning("census_refresh_failed", error=type(exc).__name__)
            rounds += 1
            if rounds % log_every == 0 and self._weights:
                for tenant, view in self.tenant_view().items():
                    log.info("fair_share", tenant=tenant, **view)
            await asyncio.sleep(period_s)
