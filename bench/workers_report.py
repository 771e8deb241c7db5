"""The workers benchmark's table: medians, paired ratios, CPU per request, where the load went."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from bench.procfs import LOAD_CPUS, SERVER_CPUS
from bench.report import Report, median

if TYPE_CHECKING:
    from bench.workers import Params, Run

ONE, TWO = "1 worker", "2 workers"
TARGET = 1.8
QUIET_CORES = 0.3  # a round is "quiet" when other work used less than this in both its runs
_LAYOUT_TEXT = {
    "shared": "nothing pinned",
    "split": f"proxy on CPU {sorted(SERVER_CPUS)}, wrk on CPU {sorted(LOAD_CPUS)}",
}


def _spread(runs: list[Run]) -> str:
    rps = [r.wrk.rps for r in runs]
    return f"{median(rps):,.0f} ({min(rps):,.0f}-{max(rps):,.0f})"


def _us_per_request(runs: list[Run], attr: str) -> float:
    """Median over runs of CPU seconds (``attr``) per answered request, in µs."""
    return median([getattr(r, attr) / r.wrk.requests * 1e6 for r in runs if r.wrk.requests])


def _cores(runs: list[Run]) -> dict[str, float]:
    """Average cores busy during the runs: the proxy, wrk, Redis + simulator, everything else."""
    elapsed = sum(r.elapsed_s for r in runs)
    return {
        "proxy": sum(r.proxy_cpu_s for r in runs) / elapsed,
        "wrk": sum(r.wrk_cpu_s for r in runs) / elapsed,
        "redis+sim": sum(r.support_cpu_s for r in runs) / elapsed,
        "others": sum(r.others_cpu_s for r in runs) / elapsed,
    }


def _run_data(run: Run) -> dict[str, Any]:
    out = asdict(run)
    out["others_cpu_s"] = run.others_cpu_s
    return out


def build_report(
    p: Params,
    results: dict[str, dict[str, list[Run]]],
    seen: dict[str, dict[str, str]],
    skipped: list[str],
    restarted: list[str],
) -> Report:
    """One block of rows per layout, and a per-round table."""
    report = Report(
        "workers",
        "Workers: cached-poll throughput of PROXY_WORKERS=2 vs PROXY_WORKERS=1 (same run)",
        {
            "load": f"wrk -t{p.threads} -c{p.connections} -d{p.duration_s:g}s",
            "rounds": p.rounds,
            "layouts": "; ".join(f"{k}: {_LAYOUT_TEXT[k]}" for k in results),
        },
    )
    data: dict[str, Any] = {"answer_headers": seen, "skipped_layouts": skipped}
    per_round: list[list[str]] = []
    for layout, runs in results.items():
        one, two = runs[ONE], runs[TWO]
        ratios = [b.wrk.rps / a.wrk.rps for a, b in zip(one, two, strict=True)]
        ratio = median(ratios)
        of_medians = median([r.wrk.rps for r in two]) / median([r.wrk.rps for r in one])
        is_shared = layout == "shared"
        report.add(f"{layout}: 1 worker req/s (min-max)", _spread(one))
        report.add(f"{layout}: 2 workers req/s (min-max)", _spread(two))
        report.add(
            f"{layout}: 2 workers / 1 worker, per round (of medians)",
            f"{ratio:.3f} ({of_medians:.3f})",
            f">= {TARGET}" if is_shared else "",
            ratio >= TARGET if is_shared else None,
        )
        quiet = [
            x
            for x, a, b in zip(ratios, one, two, strict=True)
            if max(a.others_cpu_s / a.elapsed_s, b.others_cpu_s / b.elapsed_s) < QUIET_CORES
        ]
        report.add(
            f"{layout}: the same, rounds where other work used < {QUIET_CORES} cores",
            f"{median(quiet):.3f} ({len(quiet)} of {len(ratios)} rounds)" if quiet else "none",
        )
        report.add(
            f"{layout}: p99 latency 1 / 2 workers",
            f"{median([r.wrk.p99_ms for r in one]):.2f} / "
            f"{median([r.wrk.p99_ms for r in two]):.2f} ms",
        )
        report.add(
            f"{layout}: proxy CPU per request 1 / 2 workers",
            f"{_us_per_request(one, 'proxy_cpu_s'):.1f} / "
            f"{_us_per_request(two, 'proxy_cpu_s'):.1f} µs",
        )
        report.add(
            f"{layout}: wrk CPU per request 1 / 2 workers",
            f"{_us_per_request(one, 'wrk_cpu_s'):.1f} / {_us_per_request(two, 'wrk_cpu_s'):.1f} µs",
        )
        cores = {name: _cores(rs) for name, rs in runs.items()}
        for name, c in cores.items():
            report.add(
                f"{layout}: cores busy, {name}: proxy / wrk / redis+sim / others",
                " / ".join(f"{v:.2f}" for v in c.values()),
            )
        conns = [r.connections for r in two if r.connections]
        report.add(
            f"{layout}: 2 workers: connections per worker, each round",
            ", ".join("+".join(str(n) for n in c) for c in conns) or "not sampled",
        )
        shares = [[w / sum(r.worker_cpu_s) for w in r.worker_cpu_s] for r in two]
        report.add(
            f"{layout}: 2 workers: CPU share per worker (median)",
            " / ".join(f"{median([s[i] for s in shares]):.0%}" for i in range(len(shares[0]))),
        )
        bad = sum(r.wrk.bad_status + r.wrk.socket_errors for r in one + two)
        report.add(f"{layout}: errors or unexpected statuses", str(bad), "0", bad == 0)
        for i, (a, b) in enumerate(zip(one, two, strict=True)):
            per_round.append(
                [
                    layout,
                    str(i + 1),
                    ONE if i % 2 == 0 else TWO,
                    f"{a.wrk.rps:,.0f}",
                    f"{b.wrk.rps:,.0f}",
                    f"{ratios[i]:.3f}",
                    "+".join(str(n) for n in b.connections) or "-",
                    f"{a.proxy_cpu_s / a.elapsed_s:.2f} / {b.proxy_cpu_s / b.elapsed_s:.2f}",
                    f"{a.others_cpu_s / a.elapsed_s:.2f} / {b.others_cpu_s / b.elapsed_s:.2f}",
                ]
            )
        data[layout] = {
            "median_round_ratio": ratio,
            "ratio_of_medians": of_medians,
            "round_ratios": ratios,
            "quiet_round_ratios": quiet,
            "cores": cores,
            "runs": {name: [_run_data(r) for r in rs] for name, rs in runs.items()},
        }
    every = [r for runs in results.values() for rs in runs.values() for r in rs]
    steal = sum(r.steal_s for r in every) / sum(r.elapsed_s for r in every)
    report.add("CPU steal during the runs (cores)", f"{steal:.2f}")
    status = {name: h.get("Cache-Status", "-") for name, h in seen.items()}
    report.add(
        "Cache-Status of the polled answer", "; ".join(f"{k}: {v}" for k, v in status.items())
    )
    report.add(
        "worker restarts during the runs", ", ".join(restarted) or "none", "none", not restarted
    )
    if skipped:
        report.add("layouts skipped", ", ".join(skipped))
    report.add_table(
        "Per round (cores: average CPU cores busy during the run, 1 worker / 2 workers):",
        [
            "layout",
            "round",
            "first",
            "1 worker req/s",
            "2 workers req/s",
            "ratio",
            "conns per worker",
            "proxy cores",
            "other work cores",
        ],
        per_round,
    )
    report.data = data
    return report
