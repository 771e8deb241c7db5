"""Turning what the SSE benchmark's clients recorded into latencies and counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.report import percentile
from bench.sources import SourceIndex


@dataclass
class Window:
    """Everything the workers recorded in one measurement window, merged."""

    arrivals: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    updated: dict[tuple[int, int], int] = field(default_factory=dict)
    events: int = 0
    heartbeats: int = 0
    ok_200: int = 0
    not_modified: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    open_streams: int = 0
    open_pollers: int = 0
    clients_busy: float = 0.0  # CPU share the client workers used (to show they kept up)

    @classmethod
    def merge(cls, parts: list[dict[str, Any]]) -> Window:
        """Combine the workers' ``collect`` replies."""
        w = cls()
        for part in parts:
            for key, times in part["arrivals"].items():
                w.arrivals.setdefault(key, []).extend(times)
            for key, second in part["updated"].items():
                w.updated.setdefault(key, second)
            for name in ("events", "heartbeats", "ok_200", "not_modified"):
                setattr(w, name, getattr(w, name) + part[name])
            for k, v in part["errors"].items():
                w.errors[k] = w.errors.get(k, 0) + v
            w.open_streams += part["open_streams"]
            w.open_pollers += part["open_pollers"]
        return w


@dataclass
class FanOut:
    """Per snapshot: from the upstream request to the first and the last subscriber."""

    snapshots: int = 0
    complete: int = 0  # snapshots every subscriber of the container received
    unmatched: int = 0  # snapshots whose upstream request could not be identified
    last_ms: list[float] = field(default_factory=list)
    first_ms: list[float] = field(default_factory=list)
    each_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Percentiles for the JSON file."""

        def pct(values: list[float]) -> dict[str, float]:
            return {"p50": percentile(values, 50), "p99": percentile(values, 99)}

        return {
            "snapshots": self.snapshots,
            "complete": self.complete,
            "unmatched": self.unmatched,
            "last_subscriber_ms": pct(self.last_ms),
            "first_subscriber_ms": pct(self.first_ms),
            "every_delivery_ms": pct(self.each_ms),
        }


def fan_out(
    w: Window,
    container_ids: list[str],
    sources: SourceIndex,
    subscribers: dict[int, int],
    served_between: tuple[float, float],
    clock_offset_s: float,
) -> FanOut:
    """Latency from "Layers served it" to each subscriber, for snapshots served in the window.

    ``clock_offset_s`` is the simulator's clock minus ours (same machine: near zero).
    """
    out = FanOut()
    lo, hi = served_between
    for key, times in w.arrivals.items():
        cidx, _ = key
        second = w.updated.get(key)
        served = sources.served_at(container_ids[cidx], second) if second is not None else None
        if served is None:
            out.unmatched += 1
            continue
        served -= clock_offset_s
        if not lo <= served <= hi:
            continue
        out.snapshots += 1
        out.complete += len(times) >= subscribers.get(cidx, 0)
        out.first_ms.append((min(times) - served) * 1000)
        out.last_ms.append((max(times) - served) * 1000)
        out.each_ms.extend((t - served) * 1000 for t in times)
    return out
