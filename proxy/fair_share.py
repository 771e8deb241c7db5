"""Max-min fair sharing of the upstream budget (pure).

Demand: every (tenant, resource) pair asks for the resource's cadence rate. A resource watched by
several tenants is polled once for all of them, so each pays an equal part of it. The budget is
water-filled across tenants by weight (nobody gets more than it asks for; what one leaves over
goes to the others, by weight), then each tenant's allocation is water-filled equally across its
resources. A resource's poll rate is the sum its tenants give it, never above its cadence rate.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Demand:
    """A tenant watches a resource that wants polling every ``interval_s``."""

    tenant: str
    key: str
    interval_s: float


@dataclass(frozen=True)
class Allocation:
    """The outcome: each resource's interval, and each tenant's share (requests per second)."""

    intervals_s: dict[str, float]
    tenant_rate: dict[str, float]
    tenant_demand: dict[str, float]
    tenant_resources: dict[str, int]
    tenants_of: dict[str, tuple[str, ...]]


def water_fill(
    demands: Mapping[str, float], weights: Mapping[str, float], capacity: float
) -> dict[str, float]:
    """Weighted max-min fair split of ``capacity`` among ``demands``."""
    alloc = {name: 0.0 for name in demands}
    active = {name for name, d in demands.items() if d > 0}
    left = capacity
    while active and left > 1e-12:
        total_weight = sum(weights.get(n, 1.0) for n in active)
        share = {n: left * weights.get(n, 1.0) / total_weight for n in active}
        satisfied = {n for n in active if demands[n] - alloc[n] <= share[n] + 1e-12}
        if not satisfied:
            for n in active:
                alloc[n] += share[n]
            break
        for n in satisfied:
            left -= demands[n] - alloc[n]
            alloc[n] = demands[n]
        active -= satisfied
    return alloc


def allocate(
    demands: Iterable[Demand], weights: Mapping[str, float], budget_per_s: float
) -> Allocation:
    """Fair intervals for every resource under ``budget_per_s`` upstream requests a second."""
    by_key: dict[str, set[str]] = defaultdict(set)
    interval: dict[str, float] = {}
    for d in demands:
        by_key[d.key].add(d.tenant)
        interval[d.key] = min(interval.get(d.key, d.interval_s), d.interval_s)
    # Each tenant's demand per resource: its part of the resource's cadence rate.
    tenant_items: dict[str, dict[str, float]] = defaultdict(dict)
    for key, tenants in by_key.items():
        part = (1.0 / interval[key]) / len(tenants)
        for tenant in tenants:
            tenant_items[tenant][key] = part
    tenant_demand = {t: sum(items.values()) for t, items in tenant_items.items()}
    tenant_rate = water_fill(tenant_demand, weights, budget_per_s)
    rate: dict[str, float] = defaultdict(float)
    for tenant, items in tenant_items.items():
        for key, got in water_fill(items, {}, tenant_rate[tenant]).items():
            rate[key] += got
    intervals = {
        key: interval[key] if rate[key] <= 0 else max(interval[key], 1.0 / rate[key])
        for key in interval
    }
    return Allocation(
        intervals_s=intervals,
        tenant_rate=tenant_rate,
        tenant_demand=tenant_demand,
        tenant_resources={t: len(items) for t, items in tenant_items.items()},
        tenants_of={k: tuple(sorted(v)) for k, v in by_key.items()},
    )
