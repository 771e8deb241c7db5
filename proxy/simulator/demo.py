"""Seed a simulator with a varied set of in-flight containers for demos and benchmarks."""

from __future__ import annotations

import random

from proxy.simulator.state import SimulatorState
from proxy.simulator.timeline import ContainerScript, Ending, StatusWord

# Every sixth container fails and every sixth (shifted) is canceled: "a few", deterministically.
FAIL_EVERY, FAIL_AT, CANCEL_AT = 6, 4, 5


def _content(rng: random.Random, *, long_stage: bool) -> ContainerScript:
    # The first one sits on generating_visuals past 30 s, so the 5 s cadence shows up.
    visuals = rng.uniform(35.0, 50.0) if long_stage else rng.uniform(17.0, 40.0)
    return ContainerScript(
        stages=(("generating_visuals", visuals), ("finalizing", rng.uniform(2.0, 6.0))),
        queued_s=rng.uniform(1.0, 4.0),
    )


def _github(rng: random.Random) -> ContainerScript:
    stages = (
        ("cloning", rng.uniform(3.0, 8.0)),
        ("analyzing", rng.uniform(6.0, 15.0)),
        ("generating_sdk_patch", rng.uniform(8.0, 25.0)),
        ("opening_pr", rng.uniform(3.0, 8.0)),
        ("finalizing", rng.uniform(2.0, 5.0)),
    )
    return ContainerScript(stages=stages, queued_s=rng.uniform(0.0, 3.0), kind="ingest_github")


def _website(rng: random.Random) -> ContainerScript:
    stages = (
        ("fetching", rng.uniform(8.0, 12.0)),
        ("analyzing", rng.uniform(7.0, 12.0)),
        ("finalizing", rng.uniform(3.0, 6.0)),
    )
    return ContainerScript(
        stages=stages,
        queued_s=rng.uniform(2.0, 4.0),
        kind="project_ingest_website",
        error_code="SCRAPE_FAILED",
    )


def demo_script(index: int, rng: random.Random) -> ContainerScript:
    """Return the ``index``-th demo timeline (20-90 s long) drawn from ``rng``."""
    shape = index % 3
    if shape == 0:
        script = _content(rng, long_stage=index == 0)
    elif shape == 1:
        script = _github(rng)
    else:
        script = _website(rng)
    ending: Ending = "completed"
    if index % FAIL_EVERY == FAIL_AT:
        ending = "failed"
    elif index % FAIL_EVERY == CANCEL_AT:
        ending = "canceled"
    word: StatusWord = rng.choice(("processing", "generating"))
    return ContainerScript(
        stages=script.stages,
        ending=ending,
        status_word=word,
        queued_s=script.queued_s,
        eta=index % 4 != 3,
        error_code=script.error_code,
        kind=script.kind,
    )


def seed_demo(state: SimulatorState, n: int, rng: random.Random) -> list[tuple[str, str]]:
    """Start ``n`` varied containers, each with a job, with staggered starts; return the ids."""
    seeded = []
    for index in range(n):
        script = demo_script(index, rng)
        total = script.queued_s + script.work_s
        # Already partway through (up to 40 %), so the set is in flight but none is over yet.
        offset = 0.0 if index == 0 else -rng.uniform(0.0, 0.4 * total)
        cid, job_id = state.add_container(script, start_offset_s=offset)
        assert job_id is not None
        seeded.append((cid, job_id))
    return seeded
