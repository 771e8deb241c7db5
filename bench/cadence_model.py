"""The ideal upstream schedule of a container: what a perfect single poller following the seed
page's cadence would send, given the container's scripted stage timeline.

The poller learns of a stage change only when a poll shows it (as the proxy does), so the stage's
age is measured from the first poll that saw it: 2 s between polls, 5 s once that age passes 30 s,
nothing after a terminal status. A real poller is never exactly on time, so at a stage age of
exactly 30 s (every 15th poll on the 2 s grid) the model counts the stage as older than 30 s.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from bench.stack import Container
from proxy.cadence import CadenceRules, poll_interval_s
from proxy.simulator.timeline import ContainerScript, progress_at

# How late the model's poller is at each tick (1 ms), so a tie at exactly 30 s resolves as "over".
_LATENESS_S = 0.001
# Stage ages this close to the slow-down threshold accept either interval.
_TIE_S = 0.25


def script_of(container: Container) -> ContainerScript:
    """The simulator script the benchmark gave ``container``."""
    return ContainerScript(stages=container.stages, queued_s=0.0, ending="completed")


def ideal_poll_times(
    container: Container, first_wall: float, end_wall: float, rules: CadenceRules | None = None
) -> list[float]:
    """Poll instants of an ideal poller that starts at ``first_wall``, up to ``end_wall``."""
    rules = rules or CadenceRules()
    script = script_of(container)
    times: list[float] = []
    t = first_wall
    stage: str | None = None
    stage_seen = first_wall
    while t <= end_wall:
        body = progress_at(script, t - container.started_wall)
        if body["stage"] != stage:
            stage, stage_seen = body["stage"], t
        times.append(t)
        interval = poll_interval_s(body["status"], t - stage_seen + _LATENESS_S, rules)
        if interval is None:
            break
        t += interval
    return times


@dataclass
class Conformance:
    """How the gaps between a container's actual polls compare with the cadence."""

    gaps: int = 0
    late: int = 0  # longer than the cadence allows (by more than the slack)
    early: int = 0  # shorter than the cadence asks for
    late_after_stage_change: int = 0
    stage_changes: int = 0

    def add(self, other: Conformance) -> None:
        """Accumulate another container's counts."""
        self.gaps += other.gaps
        self.late += other.late
        self.early += other.early
        self.late_after_stage_change += other.late_after_stage_change
        self.stage_changes += other.stage_changes


def conformance(
    container: Container,
    times: list[float],
    slack_s: float = 0.5,
    rules: CadenceRules | None = None,
) -> Conformance:
    """Check each gap against the interval the cadence gives at the poll that opened it."""
    rules = rules or CadenceRules()
    script = script_of(container)
    out = Conformance()
    stage: str | None = None
    stage_seen = times[0] if times else 0.0
    for t, nxt in itertools.pairwise(times):
        body = progress_at(script, t - container.started_wall)
        changed = stage is not None and body["stage"] != stage
        if body["stage"] != stage:
            stage, stage_seen = body["stage"], t
        age = t - stage_seen
        # Near the 30 s threshold both intervals are right: who saw the stage first by a few ms
        # (the simulator's log or the proxy's Redis clock) decides.
        allowed = [poll_interval_s(body["status"], age + d, rules) for d in (-_TIE_S, _TIE_S)]
        if None in allowed:
            break
        gap = nxt - t
        out.gaps += 1
        out.stage_changes += changed
        if gap > max(i for i in allowed if i is not None) + slack_s:
            out.late += 1
            out.late_after_stage_change += changed
        elif gap < min(i for i in allowed if i is not None) - 0.1:
            out.early += 1
    return out
