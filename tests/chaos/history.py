"""The offline history checker: what every client saw and what reached the upstream, judged.

A chaos test records every answer its clients got (``clients.Observation``) and fetches the
simulator's request log (``UpstreamRequest``); ``check_history`` then looks for the ways the proxy
can fail its users under faults:

- ``regression``: a client saw progress go backwards for a resource. The order key is
  (terminal or not, stage index in the container's scripted timeline, stageProgress), so a
  terminal body is after everything and "queued" before every stage.
- ``invalid_body``: a 200 body (poll, long-poll or stream event) that is not the resource's
  progress: unparseable, a field missing or of the wrong type, another container's id, or a
  stage the container's timeline does not have.
- ``error_after_data``: a 5xx (or a transport failure, or a 5xx-class SSE error event) for a
  resource after that client had already been given a snapshot of it. A cold 503 before any
  data is allowed.
- ``floor``: two upstream requests for one resource less than ``floor_s`` apart.
- ``cadence``: inside a declared window (watched, upstream healthy) a gap between upstream
  requests, or from the window's edges, longer than the cadence in force plus ``slack_s``.
- ``outage``: an upstream request inside a declared window where none may happen.
- ``freshness``: after a fault ends, a client watching a resource that is still running did not
  get a snapshot fetched after the fault began within ``fresh_within_s`` seconds.
- ``secret``: a secret string (the API key) appears in any body, event or header a client saw.

The result is a ``Report`` with counts and the first few violations of each kind, so a failing
assertion says what went wrong: ``assert report.ok, report.summary()``.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.chaos.clients import TERMINAL, ClientInfo, Observation

RUNNING = frozenset({"queued", "processing", "generating"})

# The simulator logs a request when it arrives; the proxy enforces the floor when it claims the
# poll on the Redis clock, a moment earlier. Under CPU contention the claim→arrival delay varies
# by some tens of milliseconds between two requests, so an enforced 1.000 s gap can arrive as a
# little less. 0.95 s is the tolerance the existing integration tests use for the same reason;
# anything below it is a real second request inside the floor.
FLOOR_TOLERANCE_S = 0.95


@dataclass(frozen=True)
class Timeline:
    """How the test scripted a container: its stages (in order), when it started, its end."""

    stages: tuple[tuple[str, float], ...]
    created_at: float  # monotonic time of the POST /_sim/containers that made it
    queued_s: float = 0.0
    ending: str = "completed"

    @property
    def stage_names(self) -> tuple[str, ...]:
        """Stage names in order, "queued" first (index 0)."""
        return ("queued", *(name for name, _ in self.stages))

    def stage_index(self, name: str) -> int | None:
        """The stage's position, or None when the timeline has no such stage."""
        names = self.stage_names
        return names.index(name) if name in names else None

    def stage_starts(self) -> list[tuple[str, float]]:
        """(stage, monotonic start) for every stage, "queued" included."""
        starts = [("queued", self.created_at)]
        at = self.created_at + self.queued_s
        for name, duration in self.stages:
            starts.append((name, at))
            at += duration
        return starts

    @property
    def ends_at(self) -> float:
        """Monotonic time the run reaches its terminal status (as the simulator plans it)."""
        start = self.created_at + self.queued_s
        if self.ending == "completed":
            return start + sum(d for _, d in self.stages)
        last_start = start + sum(d for _, d in self.stages[:-1])
        if self.ending == "failed":
            return last_start + 0.3 * self.stages[-1][1]
        return last_start  # canceled lands on the boundary before the last stage

    def stage_age_at(self, t: float) -> float:
        """How long the stage running at ``t`` has lasted."""
        current = self.created_at
        for _, start in self.stage_starts():
            if start <= t:
                current = start
        return max(0.0, t - current)


@dataclass(frozen=True)
class UpstreamRequest:
    """One request that reached the simulator."""

    t: float  # simulator monotonic time of arrival (same clock as time.monotonic here)
    resource: str
    kind: str = "progress"
    status: int | None = 200
    fault: str | None = None

    @staticmethod
    def from_log(records: Iterable[Mapping[str, Any]]) -> list[UpstreamRequest]:
        """Records of ``GET /_sim/requests`` that name a resource."""
        return [
            UpstreamRequest(
                float(r["t_mono"]), str(r["resource_id"]), str(r["kind"]), r["status"], r["fault"]
            )
            for r in records
            if r.get("resource_id")
        ]


@dataclass(frozen=True)
class Window:
    """A span of monotonic time, for some resources (None: every resource)."""

    start: float
    end: float
    resources: frozenset[str] | None = None
    label: str = ""

    def covers(self, resource: str) -> bool:
        """True when the window applies to ``resource``."""
        return self.resources is None or resource in self.resources


@dataclass(frozen=True)
class Fault(Window):
    """A fault from ``start`` to ``end``; ``start_wall`` is ``time.time()`` at its start."""

    start_wall: float = 0.0


@dataclass(frozen=True)
class Cadence:
    """The seed page's cadence as the proxy was configured."""

    default_s: float = 2.0
    slow_s: float = 5.0
    slow_after_s: float = 30.0

    def interval_at(self, stage_age_s: float) -> float:
        """The interval in force when the current stage has lasted ``stage_age_s``."""
        return self.slow_s if stage_age_s > self.slow_after_s else self.default_s


@dataclass(frozen=True)
class Violation:
    """One thing that should not have happened."""

    check: str
    where: str
    detail: str
    t: float


@dataclass
class Report:
    """What the checker looked at and what it found."""

    origin: float
    counts: dict[str, int] = field(default_factory=dict)
    violations: dict[str, list[Violation]] = field(default_factory=lambda: defaultdict(list))

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return not any(self.violations.values())

    def failed(self) -> list[str]:
        """The checks that found something."""
        return sorted(k for k, v in self.violations.items() if v)

    def add(self, check: str, where: str, detail: str, t: float) -> None:
        """Record a violation."""
        self.violations[check].append(Violation(check, where, detail, t))

    def summary(self, limit: int = 5) -> str:
        """Counts, then the first ``limit`` violations of each failed check (times relative)."""
        counts = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        lines = [f"history: {counts}"]
        if self.ok:
            lines.append("no violations")
        for check in self.failed():
            found = sorted(self.violations[check], key=lambda v: v.t)
            lines.append(f"{check}: {len(found)} violation(s)")
            for v in found[:limit]:
                lines.append(f"  t={v.t - self.origin:+.2f}s {v.where}: {v.detail}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _parse_wall(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _body_problem(body: Any, resource: str, timeline: Timeline | None) -> str | None:
    """Why ``body`` is not a valid progress body of ``resource`` (None when it is)."""
    if not isinstance(body, dict):
        return f"not a JSON object: {body!r:.80}"
    if resource.endswith(":unexpected"):
        return f"an event for {body.get('containerId')!r}, which the stream did not ask for"
    if body.get("containerId") != resource:
        return f"containerId {body.get('containerId')!r} is not {resource}"
    status, stage, progress = body.get("status"), body.get("stage"), body.get("stageProgress")
    if status not in RUNNING | TERMINAL:
        return f"status {status!r}"
    if not isinstance(stage, str):
        return f"stage {stage!r}"
    if isinstance(progress, bool) or not isinstance(progress, int | float):
        return f"stageProgress {progress!r}"
    if not 0.0 <= progress <= 1.0:
        return f"stageProgress {progress!r} outside [0, 1]"
    if _parse_wall(body.get("updatedAt")) is None:
        return f"updatedAt {body.get('updatedAt')!r}"
    if timeline is not None and timeline.stage_index(stage) is None:
        return f"stage {stage!r} is not in the container's timeline"
    return None


def order_key(body: dict[str, Any], timeline: Timeline | None) -> tuple[int, int, float]:
    """(terminal, stage index, stageProgress): progress never moves backwards in this order."""
    index = timeline.stage_index(body["stage"]) if timeline is not None else 0
    return (int(body["status"] in TERMINAL), index or 0, float(body["stageProgress"]))


def _describe(body: dict[str, Any]) -> str:
    return f"{body.get('status')}/{body.get('stage')}@{body.get('stageProgress')}"


def check_history(
    observations: Sequence[Observation],
    upstream: Sequence[UpstreamRequest],
    *,
    timelines: Mapping[str, Timeline],
    floor_s: float = FLOOR_TOLERANCE_S,
    cadence: Cadence | None = None,
    cadence_windows: Sequence[Window] = (),
    slack_s: float = 1.5,
    outages: Sequence[Window] = (),
    faults: Sequence[Fault] = (),
    clients: Iterable[ClientInfo] = (),
    fresh_within_s: float = 5.0,
    secrets: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    origin: float | None = None,
) -> Report:
    """Check every invariant the recorded history lets us check; see the module docstring.

    ``timelines`` names every container the test created (resources without one are checked
    for everything but stage order). Cadence, outage and freshness are checked only for the
    windows given; freshness needs ``clients`` (who watched what, from when to when), since a
    frozen client is exactly one that has no observations to look at. ``labels`` names
    resources in the report (e.g. which fault a container had).
    """
    times = [o.t for o in observations] + [u.t for u in upstream]
    report = Report(origin=origin if origin is not None else (min(times) if times else 0.0))
    progress_requests = [u for u in upstream if u.kind == "progress"]
    report.counts = {
        "observations": len(observations),
        "clients": len({o.client for o in observations}),
        "resources": len({o.resource for o in observations} | {u.resource for u in upstream}),
        "upstream_requests": len(progress_requests),
        "client_5xx": sum(1 for o in observations if o.status >= 500),
        "transport_errors": sum(1 for o in observations if o.status == 0),
    }
    _check_clients(report, observations, timelines)
    by_resource: dict[str, list[float]] = defaultdict(list)
    for u in progress_requests:
        by_resource[u.resource].append(u.t)
    for ts in by_resource.values():
        ts.sort()
    _check_floor(report, by_resource, floor_s)
    if cadence_windows:
        rules = cadence or Cadence()
        _check_cadence(report, by_resource, timelines, rules, cadence_windows, slack_s)
    for window in outages:
        for u in progress_requests:
            if window.covers(u.resource) and window.start < u.t < window.end:
                report.add(
                    "outage",
                    u.resource,
                    f"upstream request during {window.label or 'an outage'} "
                    f"({window.start - report.origin:+.2f}s..{window.end - report.origin:+.2f}s)",
                    u.t,
                )
    infos = list(clients)
    for fault in faults:
        _check_freshness(report, observations, infos, timelines, fault, fresh_within_s)
    if secrets:
        _check_secrets(report, observations, secrets)
    if labels:
        for found in report.violations.values():
            found[:] = [_labelled(v, labels) for v in found]
    return report


def _labelled(v: Violation, labels: Mapping[str, str]) -> Violation:
    for resource, label in labels.items():
        if resource in v.where:
            return Violation(
                v.check, v.where.replace(resource, f"{resource}[{label}]"), v.detail, v.t
            )
    return v


def _check_clients(
    report: Report, observations: Sequence[Observation], timelines: Mapping[str, Timeline]
) -> None:
    streams: dict[tuple[str, str], list[Observation]] = defaultdict(list)
    for o in observations:
        streams[(o.client, o.resource)].append(o)
    for (client, resource), seen in streams.items():
        seen.sort(key=lambda o: o.t)
        where = f"{client} {resource}"
        timeline = timelines.get(resource)
        best: tuple[int, int, float] | None = None
        best_body: dict[str, Any] | None = None
        had_data = False
        for o in seen:
            if o.carries_body:
                problem = o.parse_error or _body_problem(o.body, resource, timeline)
                if problem is not None:
                    report.add("invalid_body", where, f"{o.mode} {o.status}: {problem}", o.t)
                    continue
                assert isinstance(o.body, dict)
                had_data = True
                key = order_key(o.body, timeline)
                if best is not None and key < best:
                    assert best_body is not None
                    report.add(
                        "regression",
                        where,
                        f"{o.mode}: {_describe(o.body)} after {_describe(best_body)}",
                        o.t,
                    )
                elif best is None or key > best:
                    best, best_body = key, o.body
            elif had_data and o.is_failure:
                report.add("error_after_data", where, f"{o.mode}: {o.failure_text()}", o.t)


def _check_floor(report: Report, by_resource: Mapping[str, list[float]], floor_s: float) -> None:
    for resource, ts in by_resource.items():
        for a, b in itertools.pairwise(ts):
            if b - a < floor_s:
                report.add("floor", resource, f"two upstream requests {b - a:.3f}s apart", b)


def _check_cadence(
    report: Report,
    by_resource: Mapping[str, list[float]],
    timelines: Mapping[str, Timeline],
    cadence: Cadence,
    windows: Sequence[Window],
    slack_s: float,
) -> None:
    resources = set(by_resource) | set(timelines)
    for window in windows:
        for resource in sorted(resources):
            if not window.covers(resource):
                continue
            start, end = window.start, window.end
            timeline = timelines.get(resource)
            if timeline is not None:
                end = min(end, timeline.ends_at)  # polling stops at the terminal status
            if end - start <= 0:
                continue
            points = [start, *(t for t in by_resource.get(resource, []) if start < t < end), end]
            for a, b in itertools.pairwise(points):
                age = timeline.stage_age_at(a) if timeline is not None else 0.0
                # The slow cadence may start up to one interval early or late around 30 s.
                interval = cadence.interval_at(age + cadence.default_s)
                if b - a > interval + slack_s:
                    what = "no upstream request" if len(points) == 2 else "upstream gap"
                    report.add(
                        "cadence",
                        resource,
                        f"{what} for {b - a:.2f}s (cadence {interval:g}s + {slack_s:g}s slack) "
                        f"in {window.label or 'a watched window'}",
                        b,
                    )


def _check_freshness(
    report: Report,
    observations: Sequence[Observation],
    clients: Sequence[ClientInfo],
    timelines: Mapping[str, Timeline],
    fault: Fault,
    within_s: float,
) -> None:
    """Every client watching across the fault gets a post-fault-start snapshot in time."""
    deadline = fault.end + within_s
    seen_by: dict[tuple[str, str], list[Observation]] = defaultdict(list)
    for o in observations:
        seen_by[(o.client, o.resource)].append(o)
    for info in clients:
        if info.started > fault.start or info.stopped < deadline:
            continue  # not watching across the whole fault and the time after it
        for resource in info.resources:
            if not fault.covers(resource):
                continue
            timeline = timelines.get(resource)
            if timeline is not None and timeline.ends_at <= fault.start + 1.0:
                continue  # finished before the fault: nothing new to see
            seen = sorted(seen_by.get((info.name, resource), []), key=lambda o: o.t)
            bodies = [o for o in seen if o.carries_body and isinstance(o.body, dict)]
            if any(o.t <= fault.start and o.body.get("status") in TERMINAL for o in bodies):
                continue
            fresh = None
            for o in bodies:
                updated = _parse_wall(o.body.get("updatedAt"))
                # updatedAt is whole seconds (floored), so updatedAt >= start means the
                # upstream answered after the fault began.
                if updated is not None and updated >= fault.start_wall:
                    fresh = o
                    break
            if fresh is not None:
                delay_ms = int(max(0.0, fresh.t - fault.end) * 1000)
                key = f"fresh_max_ms[{fault.label or 'fault'}]"
                report.counts[key] = max(report.counts.get(key, 0), delay_ms)
            if fresh is not None and fresh.t <= deadline:
                continue
            earlier = [o for o in bodies if o.t <= deadline]
            last = earlier[-1] if earlier else None
            had = (
                f"last saw {_describe(last.body)} (updatedAt {last.body.get('updatedAt')}) at "
                f"{last.t - report.origin:+.2f}s"
                if last is not None
                else "saw no snapshot at all"
            )
            got = (
                f"first fresh snapshot {fresh.t - fault.end:.2f}s after the fault ended"
                if fresh is not None
                else "no snapshot fetched after the fault began, ever"
            )
            report.add(
                "freshness",
                f"{info.name} {resource}",
                f"{got} (limit {within_s:g}s, {fault.label or 'fault'}); {had}",
                deadline,
            )


def _check_secrets(
    report: Report, observations: Sequence[Observation], secrets: Sequence[str]
) -> None:
    wanted = [s for s in secrets if s]
    for o in observations:
        blob = o.raw_text()
        for secret in wanted:
            if secret in blob:
                report.add(
                    "secret",
                    f"{o.client} {o.resource}",
                    f"{o.mode} {o.status}: a secret ({secret[:6]}…) in the answer",
                    o.t,
                )
                break


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]
