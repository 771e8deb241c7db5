"""Reading a process's memory and CPU from /proc, pinning it to CPUs, raising the fd limit."""

from __future__ import annotations

import os
import resource

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    """Resident set size (VmRSS) of ``pid`` in KiB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat") as fh:
        raw = fh.read()
    # Fields after the command name (which may hold spaces) start at field 3.
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def pin(pid: int, cpus: frozenset[int] | set[int]) -> None:
    """Restrict ``pid`` to ``cpus`` when the machine has them (a no-op otherwise)."""
    available = os.sched_getaffinity(0)
    wanted = cpus & available
    if wanted and wanted != available:
        os.sched_setaffinity(pid, wanted)


def raise_nofile() -> int:
    """Raise the soft open-files limit to the hard one (children inherit it); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1_048_576
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def mem_available_kb() -> int:
    """MemAvailable of the machine in KiB."""
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def cpu_steal_ticks() -> int:
    """Ticks the hypervisor gave to others while this machine wanted to run (all CPUs)."""
    with open("/proc/stat") as fh:
        fields = fh.readline().split()
    return int(fields[8]) if len(fields) > 8 else 0


# The server under test gets CPU 0, the load generators CPU 1 (on a 2-core machine).
SERVER_CPUS = frozenset({0})
LOAD_CPUS = frozenset({1})
