"""The microcache benchmark's tables: the replicas alone (A) and nginx in front (B), compared."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.cadence_model import Conformance, conformance, ideal_poll_times
from bench.coalescing_report import _staleness, _upstream_by_container
from bench.poll_clients import PollResult
from bench.report import Report, percentile
from bench.sources import SourceIndex
from bench.stack import Container

if TYPE_CHECKING:
    from bench.microcache import Params

RATIO_TARGET = 1.05  # upstream / ideal, as in the coalescing benchmark


@dataclass
class Phase:
    """What one phase measured (its clients, its containers, the replicas' counter deltas)."""

    name: str
    containers: list[Container]
    result: PollResult
    end_wall: float
    replica_requests: int
    replica_not_modified: int
    replica_cpu_s: float
    front_cpu_s: float | None  # nginx's CPU seconds (B only)
    cache_statuses: dict[str, int] = field(default_factory=dict)  # "$upstream_cache_status $status"


@dataclass
class Upstream:
    """A phase's upstream traffic against the ideal cadence schedule."""

    actual: int = 0
    ideal: int = 0
    worst: float = 0.0
    min_gap_s: float = math.inf
    cadence: Conformance = field(default_factory=Conformance)

    @property
    def ratio(self) -> float:
        """Upstream requests in the window over the ideal schedule's."""
        return self.actual / self.ideal if self.ideal else math.nan


def upstream_vs_ideal(phase: Phase, by_container: dict[str, list[float]]) -> Upstream:
    """Each of the phase's containers: its upstream log against an ideal poller's."""
    out = Upstream()
    for c in phase.containers:
        times = by_container.get(c.id, [])
        if not times:
            continue
        in_window = [t for t in times if t <= phase.end_wall]
        ideal = ideal_poll_times(c, times[0], phase.end_wall)
        out.actual += len(in_window)
        out.ideal += len(ideal)
        out.worst = max(out.worst, len(in_window) / len(ideal))
        # Within the window only: after phase A the replicas go on polling its containers
        # for linger_s with nobody watching, and phase B has no such tail.
        gaps = [b - a for a, b in itertools.pairwise(in_window)]
        if gaps:
            out.min_gap_s = min(out.min_gap_s, min(gaps))
        out.cadence.add(conformance(c, in_window))
    return out


@dataclass
class Clients:
    """What a phase's clients got, and how old it was by the simulator's clock."""

    requests: int
    errors: int
    ok: int
    not_modified: int
    ages: list[float]
    delivery: list[float]
    held_age: list[float]
    age_error: list[float]  # true age of a new value minus the Age header that came with it


def client_view(phase: Phase, sources: SourceIndex) -> Clients:
    """Counts and staleness of one phase's answers."""
    seen = phase.result.seen
    ages, delivery, held_age = _staleness(seen, sources)
    age_error = []
    for s in seen:
        if not s.new_value or s.updated_s is None or s.age_s < 0:
            continue
        served = sources.served_at(s.container_id, s.updated_s)
        if served is not None:
            age_error.append((s.t_wall - served) - s.age_s)
    errors = sum(phase.result.errors.values())
    return Clients(
        requests=len(seen) + errors,
        errors=errors,
        ok=sum(1 for s in seen if s.status == 200),
        not_modified=sum(1 for s in seen if s.status == 304),
        ages=ages,
        delivery=delivery,
        held_age=held_age,
        age_error=age_error,
    )


def _pair(values: list[float], digits: int = 2) -> str:
    return f"{percentile(values, 50):.{digits}f} / {percentile(values, 99):.{digits}f} s"


def _summary(c: Clients) -> dict[str, Any]:
    def pq(values: list[float]) -> dict[str, float]:
        return {"p50": percentile(values, 50), "p99": percentile(values, 99)}

    return {
        "requests": c.requests,
        "errors": c.errors,
        "ok_200": c.ok,
        "not_modified_304": c.not_modified,
        "age_header_s": pq(c.ages),
        "delivery_s": pq(c.delivery),
        "held_age_s": pq(c.held_age),
        "true_age_minus_age_header_s": pq(c.age_error),
    }


def build_report(
    p: Params, a: Phase, b: Phase, requests: list[dict[str, object]], conf: str
) -> Report:
    """The main table (targets), the side-by-side details and nginx's cache statuses."""
    by_container = _upstream_by_container(requests)
    sources = SourceIndex(requests)
    up = {ph.name: upstream_vs_ideal(ph, by_container) for ph in (a, b)}
    cl = {ph.name: client_view(ph, sources) for ph in (a, b)}
    replicas_ratio = b.replica_requests / a.replica_requests if a.replica_requests else math.nan

    report = Report(
        "microcache",
        "Microcache: N polling clients x M containers, 2 replicas alone (A) vs nginx in front (B)",
        {
            "clients": p.clients,
            "containers": p.containers,
            "replicas": p.replicas,
            "duration_s": p.duration_s,
            "client_procs": p.procs,
            "use_stale": p.use_stale or "(none)",
        },
    )
    for ph in (a, b):
        u = up[ph.name]
        report.add(
            f"upstream / ideal ({ph.name})",
            f"{u.ratio:.3f} ({u.actual} / {u.ideal})",
            f"<= {RATIO_TARGET}",
            u.ratio <= RATIO_TARGET,
        )
    for ph in (a, b):
        early = up[ph.name].cadence.early
        report.add(
            f"upstream gaps shorter than the cadence ({ph.name})", str(early), "0", early == 0
        )
    for ph in (a, b):
        errors = cl[ph.name].errors
        report.add(f"client errors ({ph.name})", str(errors), "0", errors == 0)
    report.add("requests that reached the replicas (A)", str(a.replica_requests))
    report.add("requests that reached the replicas (B)", str(b.replica_requests))
    report.add("replica requests B / A", f"{replicas_ratio:.4f}")
    report.add("held value age p50 / p99 (A)", _pair(cl["A"].held_age))
    report.add("held value age p50 / p99 (B)", _pair(cl["B"].held_age))

    def row(metric: str, fa: str, fb: str) -> list[str]:
        return [metric, fa, fb]

    ca, cb = cl["A"], cl["B"]
    ua, ub = up["A"], up["B"]
    rate = p.duration_s
    front = f"{b.front_cpu_s:.1f} s" if b.front_cpu_s is not None else "-"
    detail = [
        row(
            "client requests (rate)",
            f"{ca.requests} ({ca.requests / rate:.0f}/s)",
            f"{cb.requests} ({cb.requests / rate:.0f}/s)",
        ),
        row("client errors", str(ca.errors), str(cb.errors)),
        row(
            "client answers 200 / 304",
            f"{ca.ok} / {ca.not_modified}",
            f"{cb.ok} / {cb.not_modified}",
        ),
        row("requests that reached the replicas", str(a.replica_requests), str(b.replica_requests)),
        row("  of which answered 304", str(a.replica_not_modified), str(b.replica_not_modified)),
        row(
            "client requests per replica request",
            f"{ca.requests / max(1, a.replica_requests):.1f}",
            f"{cb.requests / max(1, b.replica_requests):.1f}",
        ),
        row("replica CPU (both replicas)", f"{a.replica_cpu_s:.1f} s", f"{b.replica_cpu_s:.1f} s"),
        row("nginx CPU (master + worker)", "-", front),
        row("upstream requests in window", str(ua.actual), str(ub.actual)),
        row("ideal cadence schedule", str(ua.ideal), str(ub.ideal)),
        row("upstream / ideal (all)", f"{ua.ratio:.3f}", f"{ub.ratio:.3f}"),
        row("upstream / ideal (worst container)", f"{ua.worst:.3f}", f"{ub.worst:.3f}"),
        row(
            "gaps longer than the cadence (+0.5 s)",
            f"{ua.cadence.late} of {ua.cadence.gaps}",
            f"{ub.cadence.late} of {ub.cadence.gaps}",
        ),
        row(
            "  of which right after a stage change",
            f"{ua.cadence.late_after_stage_change} of {ua.cadence.stage_changes} changes",
            f"{ub.cadence.late_after_stage_change} of {ub.cadence.stage_changes} changes",
        ),
        row("gaps shorter than the cadence (-0.1 s)", str(ua.cadence.early), str(ub.cadence.early)),
        row("min gap per container", f"{ua.min_gap_s:.3f} s", f"{ub.min_gap_s:.3f} s"),
        row("Age header p50 / p99", _pair(ca.ages, 0), _pair(cb.ages, 0)),
        row("new value: seen - served upstream p50 / p99", _pair(ca.delivery), _pair(cb.delivery)),
        row("held value age at each answer p50 / p99", _pair(ca.held_age), _pair(cb.held_age)),
        row(
            "true age - Age header, new values p50 / p99", _pair(ca.age_error), _pair(cb.age_error)
        ),
    ]
    report.add_table(
        "Side by side (same containers' scripts, same clients, same duration)",
        ["metric", "A: replicas alone", "B: nginx microcache"],
        detail,
    )
    total = sum(b.cache_statuses.values())
    statuses = sorted(b.cache_statuses.items(), key=lambda kv: -kv[1])
    report.add_table(
        "nginx answers in B by $upstream_cache_status and status",
        ["cache status, status", "answers", "share"],
        [[k, str(v), f"{v / total:.1%}"] for k, v in statuses] if total else [["-", "0", "-"]],
    )
    report.data = {
        "phases": {
            ph.name: {
                "clients": _summary(cl[ph.name]),
                "client_errors": ph.result.errors,
                "replica_requests": ph.replica_requests,
                "replica_not_modified": ph.replica_not_modified,
                "replica_cpu_s": ph.replica_cpu_s,
                "nginx_cpu_s": ph.front_cpu_s,
                "upstream_in_window": up[ph.name].actual,
                "ideal_in_window": up[ph.name].ideal,
                "ratio": up[ph.name].ratio,
                "worst_container_ratio": up[ph.name].worst,
                "min_gap_s": up[ph.name].min_gap_s,
                "cadence": up[ph.name].cadence.__dict__,
                "cache_statuses": ph.cache_statuses,
            }
            for ph in (a, b)
        },
        "replica_requests_b_over_a": replicas_ratio,
        "upstream_total_logged": len(requests),
        "nginx_conf": conf,
    }
    return report
