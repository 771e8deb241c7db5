"""Prometheus metrics: what this replica served, what it asked upstream, and its state.

The hot path only bumps plain dict counters and histogram buckets here (no locks, no label
lookups); everything is turned into Prometheus families when ``/metrics`` is scraped. Labels are
bounded: route templates, status classes, cache outcomes, request kinds and configured tenant
ids, never a resource id. Gauges describe the scraped replica; counters add up across replicas.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

PREFIX = "layers_proxy_"
UPSTREAM_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
AGE_BUCKETS = (0.0, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 300.0, 3600.0)


def status_class(status: int) -> str:
    """``2xx`` … ``5xx``; ``error`` when no HTTP answer came (timeout, reset)."""
    return f"{status // 100}xx" if 100 <= status <= 599 else "error"


def cache_outcome(cache_status: str | None) -> str:
    """hit | stale | miss | collapsed from an RFC 9211 ``Cache-Status`` value ('-' if none)."""
    if not cache_status:
        return "-"
    if "detail=stale" in cache_status or "fwd=stale" in cache_status:
        return "stale"
    if "collapsed" in cache_status:
        return "collapsed"
    if "fwd=miss" in cache_status:
        return "miss"
    return "hit"


@dataclass
class Histogram:
    """Cumulative-at-scrape buckets: one list increment per observation."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            out.append((repr(float(bound)), float(running)))
        out.append(("+Inf", float(running + self.counts[-1])))
        return out


@dataclass
class Metrics:
    """The counters the request path and the scheduler write into."""

    client: dict[tuple[str, str, str], int] = field(default_factory=dict)
    upstream: dict[tuple[str, str], int] = field(default_factory=dict)
    upstream_duration: Histogram = field(
        default_factory=lambda: Histogram(UPSTREAM_DURATION_BUCKETS)
    )
    served_age: Histogram = field(default_factory=lambda: Histogram(AGE_BUCKETS))
    # Monotonic times of this replica's upstream requests in the last minute (budget ratio).
    recent_upstream: deque[float] = field(default_factory=deque)
    cooldown_s: float = 0.0  # the cluster-wide cooldown as last read from Redis (at a scrape)

    def client_request(self, route: str, status: int, cache: str, age_s: float | None) -> None:
        """One answered client request (``age_s`` = the ``Age`` served, if a snapshot)."""
        key = (route, status_class(status), cache)
        self.client[key] = self.client.get(key, 0) + 1
        if age_s is not None:
            self.served_age.observe(age_s)

    def upstream_request(self, kind: str, status: int, elapsed_s: float) -> None:
        """One upstream GET (``status`` 0 when no HTTP answer came)."""
        key = (kind, status_class(status))
        self.upstream[key] = self.upstream.get(key, 0) + 1
        self.upstream_duration.observe(elapsed_s)
        now = time.monotonic()
        self.recent_upstream.append(now)
        while self.recent_upstream and self.recent_upstream[0] < now - 60:
            self.recent_upstream.popleft()

    def upstream_last_minute(self) -> int:
        """This replica's upstream requests in the last 60 s."""
        cutoff = time.monotonic() - 60
        while self.recent_upstream and self.recent_upstream[0] < cutoff:
            self.recent_upstream.popleft()
        return len(self.recent_upstream)


@dataclass
class Gauges:
    """What a scrape reads from the running services (callables, so nothing is copied)."""

    streams_open: Callable[[], float]
    stream_events: Callable[[], float]
    watched_resources: Callable[[], float]
    leases_held: Callable[[], float]
    budget_per_minute: Callable[[], float]
    cooldown_s: Callable[[], float]
    tenant_upstream: Callable[[], dict[str, float]]
    redis_errors: Callable[[], float]


class _Collector(Collector):
    def __init__(self, metrics: Metrics, gauges: Gauges) -> None:
        self._m = metrics
        self._g = gauges

    def collect(self) -> Iterable[Metric]:
        yield from self._counters()
        yield from self._histograms()
        yield from self._gauges()

    def _counters(self) -> Iterator[Metric]:
        m, g = self._m, self._g
        client = CounterMetricFamily(
            PREFIX + "client_requests",
            "Client requests answered, by route template, status class and cache outcome.",
            labels=["route", "status_class", "cache"],
        )
        for (route, klass, cache), n in sorted(m.client.items()):
            client.add_metric([route, klass, cache], n)
        yield client
        upstream = CounterMetricFamily(
            PREFIX + "upstream_requests",
            "GET requests sent to the Layers API, by kind and status class.",
            labels=["kind", "status_class"],
        )
        for (kind, klass), n in sorted(m.upstream.items()):
            upstream.add_metric([kind, klass], n)
        yield upstream
        tenants = CounterMetricFamily(
            PREFIX + "tenant_upstream_requests",
            "Upstream requests charged to each tenant (shared resources split equally).",
            labels=["tenant"],
        )
        for tenant, share in sorted(g.tenant_upstream().items()):
            tenants.add_metric([tenant], share)
        yield tenants
        yield CounterMetricFamily(
            PREFIX + "stream_events", "SSE events written to clients.", value=g.stream_events()
        )
        yield CounterMetricFamily(
            PREFIX + "redis_errors",
            "Redis commands that failed or timed out.",
            value=g.redis_errors(),
        )

    def _histograms(self) -> Iterator[Metric]:
        for name, doc, hist in (
            (
                "upstream_request_duration_seconds",
                "Time from sending an upstream GET to its whole answer.",
                self._m.upstream_duration,
            ),
            (
                "served_snapshot_age_seconds",
                "The Age of every snapshot served (how old the data clients get is).",
                self._m.served_age,
            ),
        ):
            family = HistogramMetricFamily(PREFIX + name, doc)
            family.add_metric([], hist.buckets(), sum_value=hist.total)
            yield family

    def _gauges(self) -> Iterator[Metric]:
        g = self._g
        budget = g.budget_per_minute()
        used = float(self._m.upstream_last_minute())
        for name, doc, value in (
            ("streams_open", "Open SSE streams on this replica.", g.streams_open()),
            (
                "watched_resources",
                "Resources watched on this replica (recent polls or open streams).",
                g.watched_resources(),
            ),
            ("leases_held", "Resources this replica polls upstream.", g.leases_held()),
            (
                "upstream_budget_per_minute",
                "The enforced upstream cap, all replicas together (tier × share).",
                budget,
            ),
            (
                "upstream_budget_used_ratio",
                "This replica's upstream requests in the last minute over the cap "
                "(sum over replicas for the cluster).",
                used / budget if budget else 0.0,
            ),
            (
                "upstream_cooldown_seconds",
                "Cluster-wide cooldown left after an upstream 429 (0 when none).",
                g.cooldown_s(),
            ),
        ):
            yield GaugeMetricFamily(PREFIX + name, doc, value=value)


def make_registry(metrics: Metrics, gauges: Gauges) -> CollectorRegistry:
    """A registry of its own (one per app, so several apps in one process never collide)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(metrics, gauges))
    return registry
