"""Counters a replica keeps about itself (demo page, admin endpoint, benchmarks)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field


@dataclass
class Stats:
    """Monotonic counters; read them, never reset them."""

    client_requests: int = 0
    not_modified: int = 0
    cold_fetches: int = 0
    collapsed: int = 0
    upstream_requests: int = 0
    upstream_errors: int = 0
    stream_events: int = 0
    streams_open: int = 0
    long_polls: int = 0
    webhooks_received: int = 0
    redis_unavailable: int = 0  # cold requests answered 503 because Redis did not answer
    pool_waits: int = 0  # polls put back because no upstream connection came free in time
    fast_answers: int = 0  # client requests answered by the fast path (part of client_requests)
    by_outcome: Counter[str] = field(default_factory=Counter)
    tenant_requests: Counter[str] = field(default_factory=Counter)
    # Fractional: a resource watched by several tenants is charged to them in equal parts.
    tenant_upstream: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready copy."""
        return {
            "client_requests": self.client_requests,
            "not_modified": self.not_modified,
            "cold_fetches": self.cold_fetches,
            "collapsed": self.collapsed,
            "upstream_requests": self.upstream_requests,
            "upstream_errors": self.upstream_errors,
            "stream_events": self.stream_events,
            "streams_open": self.streams_open,
            "long_polls": self.long_polls,
            "webhooks_received": self.webhooks_received,
            "redis_unavailable": self.redis_unavailable,
            "pool_waits": self.pool_waits,
            "fast_answers": self.fast_answers,
            "upstream_by_outcome": dict(self.by_outcome),
        }
