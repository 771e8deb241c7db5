"""The seed page's polling cadence and the error backoff, as pure functions.

2 s by default; 5 s once the same stage has lasted more than 30 s; back to 2 s on a stage change;
never faster than the 1 s floor; no polling at all once the status is terminal.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

TERMINAL_STATUSES = frozenset({"completed", "failed", "canceled", "cancelled"})


@dataclass(frozen=True)
class CadenceRules:
    """The knobs of the cadence; defaults are the seed page's numbers."""

    default_interval_s: float = 2.0
    slow_interval_s: float = 5.0
    slow_after_s: float = 30.0
    floor_s: float = 1.0


def is_terminal(status: str | None) -> bool:
    """True for the statuses after which a resource never needs polling again."""
    return status is not None and status.lower() in TERMINAL_STATUSES


def poll_interval_s(
    status: str | None, stage_elapsed_s: float, rules: CadenceRules
) -> float | None:
    """Seconds until the next upstream poll, or None when the status is terminal."""
    if is_terminal(status):
        return None
    interval = (
        rules.slow_interval_s if stage_elapsed_s > rules.slow_after_s else rules.default_interval_s
    )
    return max(interval, rules.floor_s)


def error_backoff_s(
    failures: int,
    *,
    base_s: float,
    max_s: float,
    floor_s: float,
    rng: random.Random | None = None,
) -> float:
    """Delay before retrying after ``failures`` consecutive upstream failures (equal jitter).

    Half the exponential delay is fixed and half random, so a fleet of pollers that failed
    together spreads out, yet no retry comes sooner than the floor.
    """
    exp = min(max_s, base_s * (2.0 ** max(0, failures - 1)))
    r: float = rng.random() if rng is not None else random.random()
    return max(floor_s, exp / 2 + r * exp / 2)
