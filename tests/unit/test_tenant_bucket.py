"""The per-tenant upstream bucket the census hands the claim: fair under contention, roomy without.

A chaos test once saw two of a tenant's four containers go 4 s without a poll on a budget of
100,000 a minute: the census had last seen the tenant watch fewer containers, and its bucket was
1.1x that stale demand. These pin the rule that replaced it.
"""

from __future__ import annotations

from typing import Any

import pytest

from proxy.clock import ManualClock
from proxy.fair_share import Demand, allocate
from proxy.redaction import Secret
from proxy.services.census import Census
from proxy.settings import Settings
from proxy.store.budget import BudgetPolicy
from proxy.tenancy.config import TenantConfig

ACME = TenantConfig(id="acme", secrets=(("0", b"a" * 32),))
GLOBEX = TenantConfig(id="globex", secrets=(("0", b"g" * 32),), weight=3.0)


def census(rate_per_min: int, tenants: tuple[TenantConfig, ...] = (ACME, GLOBEX)) -> Census:
    settings = Settings(layers_api_key=Secret("k"), tenants=tenants, rate_per_min=rate_per_min)
    return Census(store=Any, settings=settings, clock=ManualClock())  # type: ignore[arg-type]


def per_second(policy: BudgetPolicy) -> float:
    """The steady rate a GCRA with this emission interval lets through."""
    return 1000 / policy.interval_ms


def bucket_for(rate_per_s: float) -> int:
    """The emission interval (ms) of a bucket at ``rate_per_s`` with the 10% headroom."""
    return int(1000 / (rate_per_s * 1.1)) + 1


def watching(c: Census, tenant: str, count: int, interval_s: float = 2.0) -> None:
    demands = [Demand(tenant, f"k{i}", interval_s) for i in range(count)]
    c.allocation = allocate(demands, c._weights, c._budget_per_s)


def test_a_stale_census_does_not_hold_back_a_tenant_when_the_budget_is_free() -> None:
    """The census saw acme watch 1 container; it now polls 4 at 2 s (2/s): the bucket lets them."""
    c = census(rate_per_min=100_000)
    watching(c, "acme", 1)
    assert per_second(c.tenant_budget("acme")) > 100  # far above 2/s
    # Its weight's part of the spare budget (1 of 4) plus its 0.5/s, with the 10% headroom.
    spare = c._budget_per_s - 0.5
    assert c.tenant_budget("acme").interval_ms == bucket_for(0.5 + spare / 4)


def test_under_contention_the_bucket_is_the_fair_rate() -> None:
    """Both tenants want more than the budget: nothing is spare, each gets its weighted share."""
    c = census(rate_per_min=120)
    budget = c._budget_per_s
    demands = [Demand("acme", f"a{i}", 2.0) for i in range(20)]
    demands += [Demand("globex", f"g{i}", 2.0) for i in range(20)]
    c.allocation = allocate(demands, c._weights, c._budget_per_s)
    assert c.tenant_budget("acme").interval_ms == bucket_for(budget / 4)
    assert c.tenant_budget("globex").interval_ms == bucket_for(budget * 3 / 4)


def test_the_buckets_never_add_up_to_more_than_the_budget_and_headroom() -> None:
    """Spare capacity is split by weight, so a storming tenant cannot take another's part."""
    c = census(rate_per_min=120)
    watching(c, "acme", 1)  # acme 0.5/s, globex nothing: the rest is spare
    spare = c._budget_per_s - 0.5
    total = sum(per_second(c.tenant_budget(t)) for t in ("acme", "globex"))
    assert total <= c._budget_per_s * 1.1
    assert total == pytest.approx(c._budget_per_s * 1.1, rel=0.01)
    assert c.tenant_budget("acme").interval_ms == bucket_for(0.5 + spare / 4)


def test_before_the_census_knows_anything_each_tenant_has_its_weights_share() -> None:
    c = census(rate_per_min=120)
    assert c.tenant_budget("globex").interval_ms == bucket_for(c._budget_per_s * 3 / 4)


def test_open_mode_has_no_tenant_bucket() -> None:
    assert census(rate_per_min=120, tenants=()).tenant_budget("-") == BudgetPolicy()
