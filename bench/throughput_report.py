"""The throughput benchmark's table: medians, paired ratios, and the checks on what was served."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.procfs import LOAD_CPUS, SERVER_CPUS
from bench.report import Report, median
from bench.wrk import WrkResult

if TYPE_CHECKING:
    from bench.throughput import Params


def _spread(mid: float, runs: list[WrkResult]) -> str:
    rps = [r.rps for r in runs]
    return f"{mid:,.0f} ({min(rps):,.0f}-{max(rps):,.0f})"


def build_report(
    p: Params, results: dict[str, dict[str, list[WrkResult]]], checks: dict[str, Any]
) -> Report:
    """Medians, ratios and the sanity checks (every answer a 200 or a 304 as intended)."""
    report = Report(
        "throughput",
        "Throughput: one proxy worker vs a bare aiohttp handler (same bytes, same headers)",
        {
            "load": f"wrk -t1 -c{p.connections} -d{p.duration_s:g}s",
            "rounds": p.rounds,
            "auth": p.auth,
            "servers_on_cpu": sorted(SERVER_CPUS),
            "wrk_on_cpu": sorted(LOAD_CPUS),
        },
    )
    data: dict[str, Any] = {}
    for variant, by_target in results.items():
        bare_runs, proxy_runs = by_target["bare"], by_target["proxy"]
        bare = median([r.rps for r in bare_runs])
        proxy = median([r.rps for r in proxy_runs])
        # Each round ran both servers back to back: their ratio is robust to the machine's
        # slower and faster minutes, so its median is the headline.
        ratio = median(
            [q.rps / max(b.rps, 1.0) for b, q in zip(bare_runs, proxy_runs, strict=True)]
        )
        bad = sum(r.bad_status + r.socket_errors for runs in by_target.values() for r in runs)
        label = "200 (body)" if variant == "200" else "304 (If-None-Match)"
        report.add(f"{label}: bare aiohttp req/s (min-max)", _spread(bare, bare_runs))
        report.add(f"{label}: proxy req/s (min-max)", _spread(proxy, proxy_runs))
        report.add(f"{label}: proxy / bare, per round", f"{ratio:.3f}", ">= 0.85", ratio >= 0.85)
        report.add(
            f"{label}: p99 latency bare / proxy",
            f"{median([r.p99_ms for r in bare_runs]):.2f} / "
            f"{median([r.p99_ms for r in proxy_runs]):.2f} ms",
        )
        report.add(f"{label}: errors or unexpected statuses", str(bad), "0", bad == 0)
        data[variant] = {
            "bare_rps": bare,
            "proxy_rps": proxy,
            "ratio_of_medians": proxy / bare,
            "median_round_ratio": ratio,
            "runs": {t: [r.__dict__ for r in runs] for t, runs in by_target.items()},
            "proxy_counters": checks[variant],
        }
    nm = checks["304"]
    report.add(
        "304 variant: proxy answers that were 304",
        f"{nm['not_modified']:,} of {nm['client_requests']:,}",
    )
    for variant, counts in checks.items():
        if isinstance(counts, dict) and "fast_answers" in counts:
            report.add(
                f"{variant}: answered by the fast path",
                f"{counts['fast_answers']:,} of {counts['client_requests']:,}",
            )
    report.add("CPU steal during the runs", f"{checks['steal']:.1%}")
    data["cpu_steal"] = checks["steal"]
    report.data = data
    return report
