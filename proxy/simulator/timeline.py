"""Scripted container timelines: what /progress, the container and the job say at any instant."""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Ending = Literal["completed", "failed", "canceled"]
StatusWord = Literal["processing", "generating"]
ENDINGS: tuple[Ending, ...] = ("completed", "failed", "canceled")
STATUS_WORDS: tuple[StatusWord, ...] = ("processing", "generating")

# The docs' failed example freezes at stageProgress 0.3, so scripted failures strike there.
FAILURE_FRACTION = 0.3
# 2026-04-18T09:30:00Z, the day of the docs' examples: timestamps stay plausible and fixed.
DEFAULT_EPOCH_S = 1_776_504_600.0
DEFAULT_CONTAINER_ID = "cnt_00000000-0000-4000-8000-000000000000"
DEFAULT_JOB_ID = "job_00000000000000000000000000"
DEFAULT_PROJECT_ID = "prj_simulator"
ERROR_MESSAGES = {
    "GENERATION_FAILED": "Content generation failed.",
    "SCRAPE_FAILED": "The source could not be fetched.",
    "MISSING_APP_DEMO": "The project has no app demo to remix.",
}


@dataclass(frozen=True)
class ContainerScript:
    """How one generation run unfolds: its stages, how it ends and how it words its status."""

    stages: tuple[tuple[str, float], ...] = (("generating_visuals", 14.0), ("finalizing", 3.0))
    ending: Ending = "completed"
    status_word: StatusWord = "processing"
    queued_s: float = 0.0
    eta: bool = True
    error_code: str = "GENERATION_FAILED"
    kind: str = "content_generate"
    # Elapsed seconds at which someone asked to cancel; honoured at the next stage boundary.
    cancel_requested_s: float | None = None

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("a script needs at least one stage")
        if any(duration <= 0 for _, duration in self.stages):
            raise ValueError("stage durations must be positive")
        if self.queued_s < 0:
            raise ValueError("queued_s must not be negative")
        if self.ending not in ENDINGS:
            raise ValueError(f"ending must be one of {ENDINGS}")
        if self.status_word not in STATUS_WORDS:
            raise ValueError(f"status_word must be one of {STATUS_WORDS}")

    @property
    def work_s(self) -> float:
        """Seconds of stage work after the queue, if the run went to the end."""
        return sum(duration for _, duration in self.stages)


@dataclass(frozen=True)
class Segment:
    """One stretch of a run under one stage name."""

    name: str
    status: str
    start_s: float
    duration_s: float

    @property
    def end_s(self) -> float:
        """Elapsed seconds at which the segment is over."""
        return self.start_s + self.duration_s


@dataclass(frozen=True)
class Plan:
    """A script resolved into segments and a single end: when, how, and the frozen stage."""

    segments: tuple[Segment, ...]
    natural_end_s: float
    end_s: float
    outcome: Ending
    final_stage: str
    final_stage_progress: float


@functools.lru_cache(maxsize=4096)
def plan_of(script: ContainerScript) -> Plan:
    """Resolve ``script`` (ending and any cancel request) into segments and its end."""
    segments = [Segment("queued", "queued", 0.0, script.queued_s)]
    for name, duration in script.stages:
        segments.append(Segment(name, script.status_word, segments[-1].end_s, duration))
    natural_end = segments[-1].end_s
    last, before_last = segments[-1], segments[-2]
    if script.ending == "completed":
        plan = Plan(tuple(segments), natural_end, natural_end, "completed", last.name, 1.0)
    elif script.ending == "failed":
        end = last.start_s + FAILURE_FRACTION * last.duration_s
        plan = Plan(tuple(segments), natural_end, end, "failed", last.name, FAILURE_FRACTION)
    else:
        # Cancels are cooperative: the boundary before the last stage is where it lands.
        done = 1.0 if before_last.duration_s > 0 else 0.0
        plan = Plan(tuple(segments), natural_end, last.start_s, "canceled", before_last.name, done)
    requested = script.cancel_requested_s
    if requested is None or requested >= natural_end:
        return plan
    if requested < script.queued_s:
        # A queued job is not running yet, so nothing has to reach a boundary first.
        at = max(requested, 0.0)
        fraction = floor2(at / script.queued_s)
        cancel = Plan(tuple(segments), natural_end, at, "canceled", "queued", fraction)
    else:
        ended = next(s for s in segments if s.duration_s > 0 and s.end_s >= requested)
        if ended.end_s >= natural_end:
            return plan  # asked during the last stage: too late, the run finishes as scripted
        cancel = Plan(tuple(segments), natural_end, ended.end_s, "canceled", ended.name, 1.0)
    return cancel if cancel.end_s < plan.end_s else plan


def floor2(value: float) -> float:
    """Clamp to [0, 1] and round down to 2 decimals, so 1.0 only shows once a stage is done."""
    # The epsilon keeps 0.3 * 100 = 29.999... from flooring to 0.29.
    return min(1.0, max(0.0, math.floor(value * 100 + 1e-9) / 100))


def iso(epoch_s: float) -> str:
    """Return an ISO-8601 UTC timestamp with a ``Z`` suffix, at second resolution."""
    return datetime.fromtimestamp(int(epoch_s), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def segment_at(plan: Plan, elapsed_s: float) -> Segment:
    """Return the segment running at ``elapsed_s`` (the run must not have ended)."""
    running = [s for s in plan.segments if s.duration_s > 0 and s.start_s <= elapsed_s]
    return running[-1] if running else plan.segments[0]


def is_terminal(script: ContainerScript, elapsed_s: float) -> bool:
    """Tell whether the run has reached its end at ``elapsed_s``."""
    return elapsed_s >= plan_of(script).end_s


def status_at(script: ContainerScript, elapsed_s: float) -> str:
    """Return the container status at ``elapsed_s``."""
    plan = plan_of(script)
    if elapsed_s >= plan.end_s:
        return plan.outcome
    return segment_at(plan, max(elapsed_s, 0.0)).status


def progress_at(
    script: ContainerScript,
    elapsed_s: float,
    *,
    container_id: str = DEFAULT_CONTAINER_ID,
    started_wall: float = DEFAULT_EPOCH_S,
) -> dict[str, Any]:
    """Return the flat ``GET /v1/content/:id/progress`` body at ``elapsed_s`` into the run."""
    plan = plan_of(script)
    elapsed = max(elapsed_s, 0.0)
    if elapsed >= plan.end_s:
        return {
            "containerId": container_id,
            "status": plan.outcome,
            "stage": plan.final_stage,
            "stageProgress": plan.final_stage_progress,
            "etaSeconds": None,
            "updatedAt": iso(started_wall + plan.end_s),
        }
    segment = segment_at(plan, elapsed)
    eta = math.ceil(plan.natural_end_s - elapsed) if script.eta else None
    return {
        "containerId": container_id,
        "status": segment.status,
        "stage": segment.name,
        "stageProgress": floor2((elapsed - segment.start_s) / segment.duration_s),
        "etaSeconds": eta,
        "updatedAt": iso(started_wall + elapsed),
    }


def assets_for(container_id: str, generation: int) -> list[dict[str, Any]]:
    """Return the assets of one generation; a regenerate replaces them with new URLs."""
    digest = hashlib.sha256(f"{container_id}:{generation}".encode()).hexdigest()
    base = f"https://media.layers.com/{container_id}/{digest[:12]}"
    return [
        {
            "assetId": f"ast_{digest[:24]}",
            "kind": "video",
            "url": f"{base}/video.mp4",
            "thumbnailUrl": f"{base}/thumb.jpg",
            "durationMs": 15_000,
            "width": 1080,
            "height": 1920,
            "mimeType": "video/mp4",
        }
    ]


def error_for(script: ContainerScript) -> dict[str, str]:
    """Return the ``{code, message}`` object a failed run reports."""
    message = ERROR_MESSAGES.get(script.error_code, "The job failed.")
    return {"code": script.error_code, "message": message}


def job_at(
    script: ContainerScript,
    elapsed_s: float,
    *,
    job_id: str = DEFAULT_JOB_ID,
    container_id: str = DEFAULT_CONTAINER_ID,
    project_id: str = DEFAULT_PROJECT_ID,
    started_wall: float = DEFAULT_EPOCH_S,
    generation: int = 1,
) -> dict[str, Any]:
    """Return the ``GET /v1/jobs/:id`` envelope at ``elapsed_s`` into the run."""
    plan = plan_of(script)
    elapsed = max(elapsed_s, 0.0)
    head: dict[str, Any] = {"jobId": job_id, "kind": script.kind}
    if elapsed < plan.end_s:
        # Job progress counts stage work only, so it sits at 0 while queued and never goes back.
        done = (elapsed - script.queued_s) / script.work_s
        return {
            **head,
            "status": "running",
            "stage": segment_at(plan, elapsed).name,
            "progress": floor2(done),
            "startedAt": iso(started_wall),
            "projectId": project_id,
            "containerId": container_id,
        }
    tail: dict[str, Any] = {
        "status": plan.outcome,
        "startedAt": iso(started_wall),
        "finishedAt": iso(started_wall + plan.end_s),
    }
    if plan.outcome == "completed":
        tail["result"] = {
            "containerId": container_id,
            "assets": assets_for(container_id, generation),
        }
    elif plan.outcome == "failed":
        tail["error"] = error_for(script)
    return {**head, **tail}


def container_at(
    script: ContainerScript,
    elapsed_s: float,
    *,
    container_id: str = DEFAULT_CONTAINER_ID,
    project_id: str = DEFAULT_PROJECT_ID,
    created_wall: float = DEFAULT_EPOCH_S,
    generation: int = 1,
    content_format: str = "ugc-remix",
) -> dict[str, Any]:
    """Return the ``GET /v1/content/:id`` record at ``elapsed_s`` into the current run."""
    status = status_at(script, elapsed_s)
    completed = status == "completed"
    return {
        "id": container_id,
        "projectId": project_id,
        "status": status,
        "format": content_format,
        # Fields not yet filled are null or [] mid-generation, as the container page says.
        "caption": f"Generated caption #{generation}" if completed else None,
        "assets": assets_for(container_id, generation) if completed else [],
        "approvalStatus": "not_required",
        "createdAt": iso(created_wall),
        "lastError": error_for(script) if status == "failed" else None,
    }
