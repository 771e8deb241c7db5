"""Running ``wrk`` (the load generator of the throughput benchmark) and reading its output."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured."""

    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    bad_status: int  # responses that were not 2xx or 3xx
    socket_errors: int


def wrk_binary() -> str:
    """The wrk executable, or a clear error saying how to get it."""
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed: apt-get install -y wrk")
    return path


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse(output: str) -> WrkResult:
    """Parse ``wrk --latency`` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    if not (rps and total and p50 and p99):
        raise ValueError("could not parse wrk output:\n" + output)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkResult(
        requests=int(total.group(1)),
        rps=float(rps.group(1)),
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        bad_status=int(bad.group(1)) if bad else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
    )


def run_wrk(
    url: str,
    *,
    duration_s: float,
    connections: int = 64,
    threads: int = 1,
    headers: dict[str, str] | None = None,
    cpus: frozenset[int] | set[int] | None = None,
) -> WrkResult:
    """One wrk run (optionally pinned to ``cpus``); raises if wrk fails."""
    argv = [wrk_binary(), f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s", "--latency"]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    wanted = (cpus or set()) & os.sched_getaffinity(0)
    taskset = shutil.which("taskset")
    if wanted and taskset is not None:
        # taskset pins before wrk starts its threads (a preexec_fn is unsafe with our threads).
        argv = [taskset, "-c", ",".join(str(c) for c in sorted(wanted)), *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30, check=True)
    return parse(done.stdout)
