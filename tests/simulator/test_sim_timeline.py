"""Scripted timelines: /progress bodies, job envelopes and container records over time."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.simulator.timeline import (
    ContainerScript,
    container_at,
    job_at,
    plan_of,
    progress_at,
)

# queued 3 s, generating_visuals 14 s, finalizing 3 s: 20 s in all.
SCRIPT = ContainerScript(queued_s=3.0)
PROGRESS_KEYS = {"containerId", "status", "stage", "stageProgress", "etaSeconds", "updatedAt"}


@pytest.mark.parametrize(
    ("elapsed", "status", "stage", "stage_progress", "eta"),
    [
        (0.0, "queued", "queued", 0.0, 20),
        (1.5, "queued", "queued", 0.5, 19),
        (3.0, "processing", "generating_visuals", 0.0, 17),
        (8.88, "processing", "generating_visuals", 0.42, 12),
        (16.99, "processing", "generating_visuals", 0.99, 4),
        (17.0, "processing", "finalizing", 0.0, 3),
        (19.5, "processing", "finalizing", 0.83, 1),
        (20.0, "completed", "finalizing", 1.0, None),
        (500.0, "completed", "finalizing", 1.0, None),
    ],
)
def test_progress_walks_the_default_script(
    elapsed: float, status: str, stage: str, stage_progress: float, eta: int | None
) -> None:
    """The default script reports the expected status, stage, stageProgress and eta."""
    body = progress_at(SCRIPT, elapsed)
    assert set(body) == PROGRESS_KEYS
    assert (body["status"], body["stage"]) == (status, stage)
    assert body["stageProgress"] == stage_progress
    assert body["etaSeconds"] == eta


def test_stage_progress_resets_at_each_stage_change() -> None:
    """stageProgress climbs to 0.99 just before a boundary and restarts at 0.0 after it."""
    script = ContainerScript(stages=(("cloning", 10.0), ("analyzing", 10.0), ("finalizing", 5.0)))
    assert progress_at(script, 9.99)["stageProgress"] == 0.99
    body = progress_at(script, 10.0)
    assert (body["stage"], body["stageProgress"], body["etaSeconds"]) == ("analyzing", 0.0, 15)
    assert progress_at(script, 19.99)["stageProgress"] == 0.99
    assert progress_at(script, 20.0)["stage"] == "finalizing"
    assert progress_at(script, 20.0)["stageProgress"] == 0.0


def test_updated_at_follows_the_wall_clock_and_freezes_at_the_end() -> None:
    """updatedAt is the start wall time plus elapsed, frozen at the end time once terminal."""
    started = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    assert progress_at(SCRIPT, 5.7, started_wall=started)["updatedAt"] == "2027-01-15T08:00:05Z"
    assert progress_at(SCRIPT, 90.0, started_wall=started)["updatedAt"] == "2027-01-15T08:00:20Z"


def test_generating_word_and_missing_eta() -> None:
    """Rev A scripts say "generating", and eta False gives a null etaSeconds while running."""
    script = ContainerScript(status_word="generating", eta=False)
    body = progress_at(script, 2.0)
    assert body["status"] == "generating"
    assert body["etaSeconds"] is None


def test_failure_freezes_at_thirty_percent_of_the_last_stage() -> None:
    """A failed script stops at 30 % of its last stage with a null eta."""
    script = dataclasses.replace(SCRIPT, ending="failed")
    assert plan_of(script).end_s == pytest.approx(17.9)
    assert progress_at(script, 17.89)["status"] == "processing"
    body = progress_at(script, 17.9)
    assert (body["status"], body["stage"], body["stageProgress"]) == ("failed", "finalizing", 0.3)
    assert body["etaSeconds"] is None
    assert progress_at(script, 100.0) == body


def test_scripted_cancel_lands_on_the_boundary_before_the_last_stage() -> None:
    """A canceled script stops when its second-to-last stage is done."""
    script = dataclasses.replace(SCRIPT, ending="canceled")
    assert progress_at(script, 16.99)["status"] == "processing"
    body = progress_at(script, 17.0)
    assert (body["status"], body["stage"], body["stageProgress"]) == (
        "canceled",
        "generating_visuals",
        1.0,
    )
    assert body["etaSeconds"] is None


def test_cancel_request_waits_for_the_stage_boundary() -> None:
    """A cancel asked at 5 s (mid generating_visuals) takes effect at 17 s."""
    script = dataclasses.replace(SCRIPT, cancel_requested_s=5.0)
    assert progress_at(script, 16.0)["status"] == "processing"
    assert progress_at(script, 17.0)["status"] == "canceled"
    assert plan_of(script).end_s == 17.0


def test_cancel_while_queued_is_immediate() -> None:
    """A queued run is not running yet, so a cancel lands at once."""
    script = dataclasses.replace(SCRIPT, cancel_requested_s=1.5)
    body = progress_at(script, 1.5)
    assert (body["status"], body["stage"], body["stageProgress"]) == ("canceled", "queued", 0.5)


def test_cancel_during_the_last_stage_is_too_late() -> None:
    """A cancel asked during the last stage lets the run complete."""
    script = dataclasses.replace(SCRIPT, cancel_requested_s=18.0)
    assert progress_at(script, 20.0)["status"] == "completed"


def test_running_job_envelope() -> None:
    """A running job carries stage, forward progress over stage work, and its ids."""
    job = job_at(SCRIPT, 10.0, job_id="job_X", container_id="cnt_Y", project_id="prj_Z")
    assert job == {
        "jobId": "job_X",
        "kind": "content_generate",
        "status": "running",
        "stage": "generating_visuals",
        "progress": 0.41,  # 7 of 17 s of stage work
        "startedAt": "2026-04-18T09:30:00Z",
        "projectId": "prj_Z",
        "containerId": "cnt_Y",
    }


def test_terminal_job_envelopes() -> None:
    """Completed jobs carry result assets, failed ones an error, canceled ones neither."""
    done = job_at(SCRIPT, 20.0, container_id="cnt_Y")
    assert done["status"] == "completed"
    assert done["finishedAt"] == "2026-04-18T09:30:20Z"
    assert done["result"]["containerId"] == "cnt_Y"
    assert done["result"]["assets"][0]["url"].startswith("https://media.layers.com/cnt_Y/")
    failed = job_at(dataclasses.replace(SCRIPT, ending="failed", error_code="SCRAPE_FAILED"), 18.0)
    assert failed["error"] == {
        "code": "SCRAPE_FAILED",
        "message": "The source could not be fetched.",
    }
    canceled = job_at(dataclasses.replace(SCRIPT, ending="canceled"), 18.0)
    assert canceled["status"] == "canceled"
    assert "result" not in canceled
    assert "error" not in canceled


def test_container_record_fills_in_at_the_end() -> None:
    """The container has empty assets mid-run, assets when completed, lastError when failed."""
    running = container_at(SCRIPT, 5.0)
    assert (running["status"], running["assets"], running["caption"]) == ("processing", [], None)
    assert running["lastError"] is None
    done = container_at(SCRIPT, 20.0, generation=2)
    assert done["caption"] == "Generated caption #2"
    assert len(done["assets"]) == 1
    assert container_at(SCRIPT, 20.0, generation=1)["assets"] != done["assets"]
    failed = container_at(dataclasses.replace(SCRIPT, ending="failed"), 18.0)
    assert failed["lastError"] == {
        "code": "GENERATION_FAILED",
        "message": "Content generation failed.",
    }


def test_invalid_scripts_are_refused() -> None:
    """Empty stage lists, non-positive durations and unknown endings raise ValueError."""
    with pytest.raises(ValueError):
        ContainerScript(stages=())
    with pytest.raises(ValueError):
        ContainerScript(stages=(("a", 0.0),))
    with pytest.raises(ValueError):
        ContainerScript(ending="exploded")  # type: ignore[arg-type]


stage_lists = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.floats(0.5, 60.0)), min_size=1, max_size=5
)
scripts = st.builds(
    ContainerScript,
    stages=stage_lists.map(tuple),
    ending=st.sampled_from(["completed", "failed", "canceled"]),
    status_word=st.sampled_from(["processing", "generating"]),
    queued_s=st.floats(0.0, 10.0),
    eta=st.booleans(),
)


@given(script=scripts, times=st.lists(st.floats(-5.0, 400.0), min_size=2, max_size=40))
def test_progress_invariants(script: ContainerScript, times: list[float]) -> None:
    """stageProgress stays in [0, 1] and never falls within a stage; job progress never falls."""
    plan = plan_of(script)
    previous: tuple[int, float] | None = None
    job_progress = 0.0
    for t in sorted(max(0.0, t) for t in times):  # runs never see negative time
        body = progress_at(script, t)
        assert 0.0 <= body["stageProgress"] <= 1.0
        job = job_at(script, t)
        if t >= plan.end_s:
            assert body["etaSeconds"] is None
            assert job["status"] == body["status"] == plan.outcome
            continue
        assert job["progress"] >= job_progress
        job_progress = job["progress"]
        segment = max(
            (i for i, s in enumerate(plan.segments) if s.duration_s > 0 and s.start_s <= max(t, 0)),
            default=0,
        )
        if previous is not None and previous[0] == segment:
            assert body["stageProgress"] >= previous[1]
        previous = (segment, body["stageProgress"])


@given(script=scripts)
def test_every_stage_starts_at_zero(script: ContainerScript) -> None:
    """At the instant each stage begins (before the end), stageProgress is exactly 0.0."""
    plan = plan_of(script)
    for segment in plan.segments:
        if segment.duration_s > 0 and segment.start_s < plan.end_s:
            body = progress_at(script, segment.start_s)
            assert body["stage"] == segment.name
            assert body["stageProgress"] == 0.0
