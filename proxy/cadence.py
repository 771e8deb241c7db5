"""The seed page's polling cadence and the error backoff, as pure functions.

2 s by default; 5 s once the same stage has lasted more than 30 s; back to 2 s on a stage change;
never faster than the 1 s floor; no polling at all once the status is terminal.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from proxy.snapshot import Snapshot

TERMINAL_STATUSES = frozenset({"completed", "failed", "canceled", "cancelled"})


@dataclass(frozen=True)
class CadenceRules:
    """The knobs of the cadence; defaults are the seed page's numbers."""

    default_interval_s: float = 2.0
    slow_interval_s: float = 5.0
    slow_after_s: float = 30.0
    floor_s: float = 1.0
    list_interval_s: float = 10.0  # a project's content list: a slow, fixed cadence


def is_terminal(status: str | None) -> bool:
    """True for the statuses after which a resource never needs polling again."""
    return status is not None and status.lower() in TERMINAL_STATUSES


def poll_interval_s(
    status: str | None, stage_elapsed_s: float, rules: CadenceRules, *, is_list: bool = False
) -> float | None:
    """Seconds until the next upstream poll, or None when the status is terminal."""
    if is_list:
        return max(rules.list_interval_s, rules.floor_s)
    if is_terminal(status):
        return None
    interval = (
        rules.slow_interval_s if stage_elapsed_s > rules.slow_after_s else rules.default_interval_s
    )
    return max(interval, rules.floor_s)


def snapshot_interval_s(
    snap: Snapshot, rules: CadenceRules, *, is_list: bool = False
) -> float | None:
    """``poll_interval_s`` for ``snap``: its status, and how long its stage had lasted when the
    upstream last confirmed it. None when the status is terminal.

    ``is_list`` is the kind's ``list_cadence`` (``ResourceRef.kind_of_key(snap.key)``).
    """
    elapsed = max(0.0, (snap.fetched_ms - snap.stage_since_ms) / 1000)
    return poll_interval_s(snap.status, elapsed, rules, is_list=is_list)


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
