"""``python -m bench <name>`` or ``all``: run benchmarks, print tables, write JSON.

Each benchmark is a module ``bench/<name>.py`` with ``add_arguments(parser)``,
``params_from(args)`` and ``run(params) -> Report``; this file only lists them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from types import ModuleType

# In the order ``all`` runs them; a module that is not there (yet) is left out.
BENCHMARKS = (
    "coalescing",
    "throughput",
    "sse",
    "stream_memory",
    "fanout",
    "fairness",
    "jobs",
    "workers",
    "polls",
    "microcache",
)


def _modules() -> dict[str, ModuleType]:
    found = {}
    for name in BENCHMARKS:
        try:
            found[name] = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"bench.{name}":
                raise
    return found


def _summary(module: ModuleType) -> str:
    return (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""


def build_parser(modules: dict[str, ModuleType]) -> argparse.ArgumentParser:
    """One subcommand per benchmark, plus ``all``."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="name", required=True)
    for name, module in modules.items():
        summary = _summary(module)
        own = sub.add_parser(name, help=summary, description=summary)
        module.add_arguments(own)
        own.add_argument(
            "--tag", default="", help="write bench/results/<name>-<tag>.json instead (variants)"
        )
    every = sub.add_parser("all", help="every benchmark with its defaults (or --quick)")
    every.add_argument("--quick", action="store_true", help="the CI smoke variants")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen benchmark(s); exit 0 even when a target is missed (this is not a test)."""
    modules = _modules()
    args = build_parser(modules).parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every started process is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    names = list(modules) if args.name == "all" else [args.name]
    for name in names:
        module = modules[name]
        if args.name == "all":
            own = argparse.ArgumentParser()
            module.add_arguments(own)
            sub_args = own.parse_args(["--quick"] if args.quick else [])
        else:
            sub_args = args
        load_before = os.getloadavg()[0]
        report = module.run(module.params_from(sub_args))
        # Other work on the machine skews these numbers; the JSON keeps how busy it was.
        report.params["loadavg_1m_before"] = round(load_before, 2)
        # Smoke runs and variants keep their own files, so the default runs' results stay.
        tag = getattr(sub_args, "tag", "") or ("quick" if getattr(sub_args, "quick", False) else "")
        if tag:
            report.name = f"{report.name}-{tag}"
        report.emit()
    return 0
