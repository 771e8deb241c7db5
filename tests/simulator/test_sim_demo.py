"""seed_demo: a varied, deterministic set of in-flight containers."""

from __future__ import annotations

import random

from proxy.simulator import SimulatorState, seed_demo
from proxy.simulator.timeline import is_terminal


def test_demo_set_is_varied_and_in_flight(state: SimulatorState) -> None:
    """Twelve demo containers mix kinds, words, endings and etas, and none has ended yet."""
    seeded = seed_demo(state, 12, random.Random(7))
    assert len(seeded) == 12
    assert len({cid for cid, _ in seeded}) == 12
    runs = [state.containers[cid].run for cid, _ in seeded]
    scripts = [run.script for run in runs]
    lifetimes = [s.queued_s + s.work_s for s in scripts]
    assert all(20.0 <= life <= 90.0 for life in lifetimes)
    assert {s.kind for s in scripts} == {
        "content_generate",
        "ingest_github",
        "project_ingest_website",
    }
    assert {s.status_word for s in scripts} == {"processing", "generating"}
    assert sum(s.ending == "failed" for s in scripts) == 2
    assert sum(s.ending == "canceled" for s in scripts) == 2
    assert sum(not s.eta for s in scripts) == 3
    assert any(duration > 30.0 for s in scripts for _, duration in s.stages)
    assert all(job_id == run.job_id for (_, job_id), run in zip(seeded, runs, strict=True))
    assert not any(is_terminal(run.script, state.elapsed(run)) for run in runs)
    starts = {round(state.elapsed(run), 3) for run in runs}
    assert len(starts) > 6  # staggered, not all started together


def test_demo_is_deterministic_per_seed() -> None:
    """The same seed gives the same scripts."""
    first, second = SimulatorState(seed=1), SimulatorState(seed=1)
    seed_demo(first, 5, random.Random(3))
    seed_demo(second, 5, random.Random(3))
    scripts = [[c.run.script for c in s.containers.values()] for s in (first, second)]
    assert scripts[0] == scripts[1]
