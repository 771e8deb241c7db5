"""The coalescing benchmark's table: upstream traffic against the cadence, client staleness."""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import TYPE_CHECKING

from bench.cadence_model import Conformance, conformance, ideal_poll_times
from bench.poll_clients import PollResult, Seen
from bench.report import Report, percentile
from bench.sources import SourceIndex
from bench.stack import Container

if TYPE_CHECKING:
    from bench.coalescing import Params


def _upstream_by_container(requests: list[dict[str, object]]) -> dict[str, list[float]]:
    by: dict[str, list[float]] = defaultdict(list)
    for r in requests:
        by[str(r["resource_id"])].append(float(r["t_wall"]))  # type: ignore[arg-type]
    return {k: sorted(v) for k, v in by.items()}


def build_report(
    p: Params,
    containers: list[Container],
    requests: list[dict[str, object]],
    result: PollResult,
    end_wall: float,
    stats: list[dict[str, object]],
) -> Report:
    """Compare the upstream log with the ideal schedule and summarise what clients saw."""
    upstream = _upstream_by_container(requests)
    actual_total = ideal_total = 0
    worst = 0.0
    min_gap = float("inf")
    slow_gaps = 0
    per_container = {}
    cadence = Conformance()
    for c in containers:
        times = upstream.get(c.id, [])
        if not times:
            continue
        in_window = [t for t in times if t <= end_wall]
        ideal = ideal_poll_times(c, times[0], end_wall)
        actual_total += len(in_window)
        ideal_total += len(ideal)
        worst = max(worst, len(in_window) / len(ideal))
        gaps = [b - a for a, b in itertools.pairwise(times)]
        if gaps:
            min_gap = min(min_gap, min(gaps))
        slow_gaps += sum(1 for g in gaps if g >= 4.5)
        cadence.add(conformance(c, times))
        per_container[c.id] = {"upstream": len(in_window), "ideal": len(ideal)}
    ratio = actual_total / ideal_total if ideal_total else float("nan")
    ages, delivery, held_age = _staleness(result.seen, SourceIndex(requests))
    n_requests = len(result.seen) + sum(result.errors.values())
    n_errors = sum(result.errors.values())
    upstream_total = len(requests)

    report = Report(
        "coalescing",
        "Coalescing: N polling clients x M containers, 2 replicas, one Redis",
        {
            "clients": p.clients,
            "containers": p.containers,
            "replicas": p.replicas,
            "duration_s": p.duration_s,
            "client_procs": p.procs,
        },
    )
    report.add("client requests (rate)", f"{n_requests} ({n_requests / p.duration_s:.0f}/s)")
    report.add("client errors", str(n_errors), "0", n_errors == 0)
    report.add("upstream requests in window", str(actual_total))
    report.add("ideal cadence schedule", str(ideal_total))
    report.add("upstream / ideal (all)", f"{ratio:.3f}", "<= 1.05", ratio <= 1.05)
    report.add("upstream / ideal (worst container)", f"{worst:.3f}")
    report.add("upstream gaps >= 4.5 s (5 s cadence)", str(slow_gaps))
    report.add(
        "gaps longer than the cadence (+0.5 s)",
        f"{cadence.late} of {cadence.gaps}",
        "0",
        cadence.late == 0,
    )
    report.add(
        "  of which right after a stage change",
        f"{cadence.late_after_stage_change} of {cadence.stage_changes} changes",
    )
    report.add(
        "gaps shorter than the cadence (-0.1 s)", str(cadence.early), "0", cadence.early == 0
    )
    report.add("min gap per container", f"{min_gap:.3f} s", ">= 1.0 s", min_gap >= 1.0)
    report.add("coalescing (client / upstream)", f"{n_requests / max(1, actual_total):.1f}x")
    report.add("Age header p50 / p99", f"{percentile(ages, 50):.0f} / {percentile(ages, 99):.0f} s")
    report.add(
        "new value: seen - served upstream p50 / p99",
        f"{percentile(delivery, 50):.2f} / {percentile(delivery, 99):.2f} s",
    )
    report.add(
        "held value age at each answer p50 / p99",
        f"{percentile(held_age, 50):.2f} / {percentile(held_age, 99):.2f} s",
    )
    report.data = {
        "client_requests": n_requests,
        "client_errors": result.errors,
        "upstream_total_logged": upstream_total,
        "upstream_in_window": actual_total,
        "ideal_in_window": ideal_total,
        "ratio": ratio,
        "worst_container_ratio": worst,
        "min_gap_s": min_gap,
        "slow_gaps": slow_gaps,
        "cadence": cadence.__dict__,
        "age_s": {"p50": percentile(ages, 50), "p99": percentile(ages, 99)},
        "delivery_s": {"p50": percentile(delivery, 50), "p99": percentile(delivery, 99)},
        "held_age_s": {"p50": percentile(held_age, 50), "p99": percentile(held_age, 99)},
        "unmatched_values": len(result.seen) - len(held_age),
        "replica_stats": stats,
        "per_container": per_container,
    }
    return report


def _staleness(
    seen: list[Seen], sources: SourceIndex
) -> tuple[list[float], list[float], list[float]]:
    """Age headers; (seen - served) for new values; (answer - served) of the held value."""
    ages = [float(s.age_s) for s in seen if s.age_s >= 0]
    delivery: list[float] = []
    held_age: list[float] = []
    for s in seen:
        if s.updated_s is None:
            continue
        served = sources.served_at(s.container_id, s.updated_s)
        if served is None:
            continue
        held_age.append(s.t_wall - served)
        if s.new_value:
            delivery.append(s.t_wall - served)
    return ages, delivery, held_age
