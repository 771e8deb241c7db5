"""The parameters and answers of the poll gate: the budget's GCRA policy and the claim verdict."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BudgetPolicy:
    """GCRA parameters of the shared upstream budget (0 interval = unlimited)."""

    interval_ms: int = 0
    burst_ms: int = 0

    @staticmethod
    def per_minute(limit: float, burst: int = 1) -> BudgetPolicy:
        """At most ``limit`` requests in any 60 s window, ``burst`` of them back to back.

        GCRA admits ``60 s / interval + burst`` requests in a window, so the rate is lowered by
        the burst to keep that sum at or under ``limit``.
        """
        burst = max(1, burst)
        steady = max(1.0, limit - burst)
        interval = int(60_000 / steady) + 1
        return BudgetPolicy(interval_ms=interval, burst_ms=interval * (burst - 1))


# No limit: the default of every budget parameter.
UNLIMITED = BudgetPolicy()


@dataclass(frozen=True, slots=True)
class Claim:
    """The gate's verdict: ``ok`` (ms = Redis now), or why not and for how long (ms)."""

    verdict: str
    ms: int
