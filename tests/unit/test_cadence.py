"""The seed page's cadence and the error backoff."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from proxy.cadence import (
    CadenceRules,
    error_backoff_s,
    is_terminal,
    poll_interval_s,
    snapshot_interval_s,
)
from proxy.snapshot import Snapshot

RULES = CadenceRules()
IN_PROGRESS = st.sampled_from(["queued", "processing", "generating", "running", "weird_new"])


def test_default_is_two_seconds() -> None:
    """A fresh stage is polled every 2 s."""
    assert poll_interval_s("processing", 0.0, RULES) == 2.0
    assert poll_interval_s("generating", 30.0, RULES) == 2.0


def test_slows_to_five_after_thirty_seconds_on_one_stage() -> None:
    """Once a stage has lasted more than 30 s the interval is 5 s."""
    assert poll_interval_s("processing", 30.001, RULES) == 5.0
    assert poll_interval_s("processing", 600.0, RULES) == 5.0


def test_terminal_statuses_stop_polling() -> None:
    """completed, failed and canceled (either spelling) need no more polls."""
    for status in ("completed", "failed", "canceled", "cancelled", "COMPLETED"):
        assert is_terminal(status)
        assert poll_interval_s(status, 0.0, RULES) is None
    assert not is_terminal("processing")
    assert not is_terminal(None)


@given(IN_PROGRESS, st.floats(min_value=0, max_value=1e6), st.floats(min_value=0.1, max_value=10))
def test_never_below_the_floor(status: str, elapsed: float, configured: float) -> None:
    """Whatever is configured, the interval is never below the 1 s floor."""
    rules = CadenceRules(default_interval_s=configured, slow_interval_s=configured)
    interval = poll_interval_s(status, elapsed, rules)
    assert interval is not None and interval >= 1.0


@given(IN_PROGRESS, st.floats(min_value=0, max_value=1e6), st.floats(min_value=0, max_value=1e6))
def test_interval_only_grows_with_stage_age(status: str, a: float, b: float) -> None:
    """An older stage is never polled faster than a younger one."""
    young, old = sorted((a, b))
    assert poll_interval_s(status, young, RULES) <= poll_interval_s(status, old, RULES)  # type: ignore[operator]


@given(st.integers(min_value=1, max_value=50), st.integers(min_value=0, max_value=2**32))
def test_backoff_bounded_and_jittered(failures: int, seed: int) -> None:
    """Backoff stays within [floor, max] and within half of the exponential step."""
    delay = error_backoff_s(failures, base_s=2, max_s=30, floor_s=1, rng=random.Random(seed))
    step = min(30.0, 2.0 * 2 ** (failures - 1))
    assert 1.0 <= delay <= 30.0
    assert step / 2 <= delay <= step or delay == 1.0


def test_a_snapshots_interval_follows_its_stage_age_when_last_confirmed() -> None:
    """The stage's age is taken at the last upstream answer, never below zero."""

    def snap(status: str, stage_since_ms: int, fetched_ms: int) -> Snapshot:
        return Snapshot(
            key="progress:x", status=status, stage_since_ms=stage_since_ms, fetched_ms=fetched_ms
        )

    assert snapshot_interval_s(snap("processing", 0, 30_000), RULES) == 2.0
    assert snapshot_interval_s(snap("processing", 0, 30_001), RULES) == 5.0
    assert snapshot_interval_s(snap("processing", 50_000, 10_000), RULES) == 2.0
    assert snapshot_interval_s(snap("completed", 0, 1_000), RULES) is None
    assert snapshot_interval_s(snap("processing", 0, 0), RULES, is_list=True) == 10.0
