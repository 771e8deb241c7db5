"""Percentiles, the printed table and the JSON file every benchmark writes."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    """The median (mean of the middle two for an even count); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def revision() -> str:
    """The commit the numbers belong to (``+dirty`` when code outside bench/ and docs/ changed)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":!bench",
                ":!docs",
            ],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def machine() -> dict[str, Any]:
    """Where the numbers were measured."""
    return {
        "revision": revision(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
    }


@dataclass
class Row:
    """One line of a result table: what, how much, the target and whether it was met."""

    metric: str
    value: str
    target: str = ""
    ok: bool | None = None


@dataclass
class Report:
    """A benchmark's result: a table for people and a JSON document for tools."""

    name: str
    title: str
    params: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    extra: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)

    def add(self, metric: str, value: str, target: str = "", ok: bool | None = None) -> None:
        """Append a row."""
        self.rows.append(Row(metric, value, target, ok))

    def add_table(self, title: str, header: list[str], rows: list[list[str]]) -> None:
        """A second table printed under the main one (e.g. a ladder of steps)."""
        self.extra.append((title, header, rows))

    def table(self) -> str:
        """The rows as a Markdown table."""
        lines = [
            [r.metric, r.value, r.target, "" if r.ok is None else ("yes" if r.ok else "NO")]
            for r in self.rows
        ]
        return markdown_table(["metric", "value", "target", "met"], lines)

    def emit(self) -> Path:
        """Print the table and write ``bench/results/<name>.json``; returns the path."""
        where = machine()
        params = " ".join(f"{k}={v}" for k, v in self.params.items())
        stamp = f"{where['date']}, {where['cpus']} CPUs, rev {where['revision']}"
        print(f"\n## {self.title}\n\n{stamp}\n{params}\n\n{self.table()}\n", flush=True)
        for title, header, rows in self.extra:
            print(f"{title}\n\n{markdown_table(header, rows)}\n", flush=True)
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"{self.name}.json"
        doc = {
            "benchmark": self.name,
            "machine": where,
            "params": self.params,
            "rows": [r.__dict__ for r in self.rows],
            "tables": [{"title": t, "header": h, "rows": r} for t, h, r in self.extra],
            "data": self.data,
        }
        path.write_text(json.dumps(_clean(doc), indent=2, default=str) + "\n")
        print(f"wrote {path}", flush=True)
        return path


def markdown_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    """A padded Markdown table."""
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

    def fmt(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [fmt(line) for line in lines]
    return "\n".join(out)


def _clean(value: Any) -> Any:
    """NaN and infinities become null (strict JSON); tuple keys become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
