"""The settings table: every setting declared once, with its meaning and its rules.

That one declaration drives parsing (``sources``, ``coerce``), validation (``validate``),
``layers-proxy check-config`` and the reference in docs/configuration.md (``reference``). To add a
setting, add a field here (a new group of settings also gets a heading in ``reference.SECTIONS``)
and regenerate the reference with ``python -m proxy.settings --update docs/configuration.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from typing import Any

from proxy.cadence import CadenceRules
from proxy.redaction import Secret
from proxy.settings.meta import doc
from proxy.tenancy.config import TenantConfig


def _unset() -> Secret:
    return Secret("")


@dataclass(frozen=True)
class Settings:
    """Everything the proxy can be told; docs/configuration.md is generated from this."""

    layers_api_url: str = field(
        default="https://api.layers.com",
        metadata=doc(
            "Upstream base URL: the Layers Partner API, or the simulator.",
            alias="LAYERS_API_URL",
            rule="an http(s) URL",
        ),
    )
    layers_api_key: Secret = field(
        default_factory=_unset,
        metadata=doc(
            "The Layers API key the proxy polls with (never logged or returned).",
            alias="LAYERS_API_KEY",
            required=True,
            secret=True,
            default_text="required",
        ),
    )
    redis_url: str = field(
        default="redis://127.0.0.1:6379/0",
        metadata=doc(
            "The Redis every replica shares; `rediss://` for TLS; `redis+sentinel://` follows "
            "the master Sentinel names; `redis+cluster://` runs on a Redis Cluster; `memory://` "
            "is an embedded in-process Redis for a single replica.",
            alias="REDIS_URL",
            rule="`redis://host[:port][/db]`, `rediss://…`, `unix:///path`, "
            "`redis+sentinel://h1:26379,h2:26379/master[/db]`, "
            "`redis+cluster://h1:7000[,h2:7001…]`, `memory://`",
        ),
    )
    host: str = field(
        default="127.0.0.1",
        metadata=doc("Address to listen on; `0.0.0.0` in a container.", required=True),
    )
    port: int = field(
        default=8080, metadata=doc("Port to listen on; 0 picks a free one.", ge=0, le=65535)
    )
    workers: str = field(
        default="1",
        metadata=doc(
            "Worker processes serving one port (`SO_REUSEPORT`), each a full replica; "
            "`auto` = one per core.",
            rule="a whole number from 1 to 64, or `auto`",
        ),
    )
    auth_mode: str = field(
        default="tokens",
        metadata=doc(
            "`tokens`: every request needs a tenant's capability token (needs `[[tenants]]`); "
            "`none`: open single-tenant mode.",
            alias="PROXY_AUTH",
            choices=("tokens", "none"),
        ),
    )
    replica_id: str = field(
        default="",
        metadata=doc(
            "This replica's name in leases, limits and logs; empty: `<hostname>-<pid>-<random>`.",
            default_text="generated",
        ),
    )

    # Cadence (seed page).
    default_interval_s: float = field(
        default=2.0,
        metadata=doc("Seconds between polls of a running resource.", ge_field="floor_s"),
    )
    slow_interval_s: float = field(
        default=5.0,
        metadata=doc(
            "Seconds between polls once a resource has stayed `slow_after_s` on one stage.",
            ge_field="floor_s",
        ),
    )
    slow_after_s: float = field(
        default=30.0, metadata=doc("Seconds on one stage after which polling slows down.", ge=0)
    )
    floor_s: float = field(
        default=1.0,
        metadata=doc(
            "Least gap between two upstream polls of one resource, cluster-wide (Layers' rule).",
            ge=1,
        ),
    )

    # Interest and caching.
    linger_s: float = field(
        default=15.0, metadata=doc("Polling continues this long after the last watcher.", gt=0)
    )
    interest_flush_s: float = field(
        default=1.0, metadata=doc("How often a replica writes who watches what to Redis.", gt=0)
    )
    revalidate_terminal_after_s: float = field(
        default=600.0,
        metadata=doc(
            "A finished container watched again this much later is re-checked once.", gt=0
        ),
    )
    negative_ttl_s: float = field(
        default=10.0, metadata=doc("How long a 404 from the upstream is cached.", gt=0)
    )
    snapshot_ttl_s: float = field(
        default=86400.0, metadata=doc("How long Redis keeps a snapshot nobody updates.", gt=0)
    )
    project_poll_s: float = field(
        default=10.0,
        metadata=doc(
            "How often a watched project's in-flight content list is polled upstream.", ge=1
        ),
    )
    project_recent_s: float = field(
        default=300.0,
        metadata=doc(
            "A project view keeps showing a container this long after it ended.", ge=0, le=3600
        ),
    )
    stale_after_s: float = field(
        default=15.0, metadata=doc("A snapshot older than this is served marked stale.", gt=0)
    )

    # Leases.
    lease_ttl_s: float = field(
        default=6.0,
        metadata=doc(
            "A dead replica's resources are taken over after this (the failover time).",
            gt=0,
            rule="≥ 3 × `interest_flush_s`",
        ),
    )

    # Upstream.
    upstream_timeout_s: float = field(
        default=10.0, metadata=doc("Whole-request timeout per upstream call.", gt=0)
    )
    upstream_connect_timeout_s: float = field(
        default=3.0, metadata=doc("Connect timeout per upstream call.", gt=0)
    )
    upstream_max_connections: int = field(
        # Large on purpose: a request that hangs holds its connection until a timeout, and
        # hundreds of hung resources must not leave healthy ones waiting for a connection.
        # Idle pooled connections cost little; the budget, not the pool, bounds the rate.
        default=256,
        metadata=doc(
            "Upstream connections one replica may have open at once (both pools together).",
            ge=2,
        ),
    )
    upstream_read_timeout_s: float = field(
        default=5.0,
        metadata=doc(
            "Timeout for the first byte and every later read; a drip that stalls longer fails.",
            gt=0,
        ),
    )
    upstream_pool_wait_s: float = field(
        default=2.0,
        metadata=doc(
            "How long a poll may wait for a free connection before it is put back (never claimed).",
            gt=0,
        ),
    )
    upstream_failing_connections: int = field(
        default=32,
        metadata=doc(
            "Connections resources whose last poll failed may use at once, so hung ones cannot "
            "starve healthy ones.",
            ge=1,
            le_field="upstream_max_connections",
        ),
    )
    upstream_max_body_bytes: int = field(
        default=65536, metadata=doc("Largest upstream response body accepted.", ge=1024)
    )
    backoff_base_s: float = field(
        default=2.0, metadata=doc("First delay after an upstream error (jittered).", gt=0)
    )
    backoff_max_s: float = field(
        default=30.0,
        metadata=doc(
            "Longest delay between retries after errors.", gt=0, ge_field="backoff_base_s"
        ),
    )
    default_cooldown_s: float = field(
        default=30.0,
        metadata=doc("Cooldown of every replica after a 429 without `Retry-After`.", gt=0),
    )
    cold_wait_s: float = field(
        default=15.0,
        metadata=doc(
            "How long a request for an uncached resource waits for the first answer.", gt=0
        ),
    )
    rate_per_min: int = field(
        default=120,
        metadata=doc(
            "The key's read-light tier in GETs per minute (1200 pilot, 6000 partner).",
            alias="LAYERS_RATE_PER_MIN",
            ge=1,
        ),
    )
    budget_share: float = field(
        default=0.9,
        metadata=doc("Share of `rate_per_min` all replicas together may spend.", gt=0, le=1),
    )
    upstream_etags: bool = field(
        default=True,
        metadata=doc("Send `If-None-Match` upstream where Layers documents ETags (jobs)."),
    )

    # Redis.
    redis_timeout_s: float = field(
        default=2.0, metadata=doc("Timeout of every Redis command and connect.", gt=0)
    )

    # Push.
    sse_heartbeat_s: float = field(
        default=15.0, metadata=doc("Seconds between SSE heartbeat comments.", gt=0)
    )
    sse_write_timeout_s: float = field(
        default=25.0,
        metadata=doc("A stream client that stops reading for this long is dropped.", gt=0),
    )
    sse_retry_ms: int = field(
        default=3000,
        metadata=doc("The `retry:` reconnect delay sent to `EventSource` clients.", ge=100),
    )
    long_poll_max_s: float = field(
        default=30.0, metadata=doc("Cap on `Prefer: wait=N` long polls.", gt=0)
    )
    max_stream_ids: int = field(
        default=100, metadata=doc("Ids per batch request or multiplexed stream.", ge=1, le=1000)
    )

    # Edge limits.
    max_url_bytes: int = field(
        default=8192,
        metadata=doc(
            "Longer request URLs get a 414 (100 ids of ~40 characters fit).", ge=256, le=65536
        ),
    )
    max_header_bytes: int = field(
        default=16384, metadata=doc("Larger request headers get a 431.", ge=1024, le=65536)
    )
    header_timeout_s: float = field(
        default=10.0,
        metadata=doc(
            "A connection that has not sent a whole request head by then is closed.", gt=0
        ),
    )
    keepalive_timeout_s: float = field(
        default=30.0, metadata=doc("An idle keep-alive connection is closed after this.", gt=0)
    )
    fast_path: bool = field(
        default=True,
        metadata=doc(
            "Answer repeat polls of cached snapshots straight from the connection's bytes "
            "(same answers, a fraction of the CPU); `false` sends every request through "
            "aiohttp's router."
        ),
    )
    shutdown_timeout_s: float = field(
        default=5.0,
        metadata=doc("On SIGTERM/SIGINT, how long in-flight requests may take to finish.", gt=0),
    )

    # Logs.
    log_level: str = field(
        default="info",
        metadata=doc(
            "JSON logs on stdout from this level up.", choices=("debug", "info", "warning", "error")
        ),
    )
    access_log: str = field(
        default="errors",
        metadata=doc(
            "`all` requests, `errors` (non-2xx/304 and cold fetches) or `off`.",
            choices=("all", "errors", "off"),
        ),
    )
    log_summary_interval_s: float = field(
        default=10.0,
        metadata=doc(
            "Repeated bad-request and parser errors are logged as one summary per interval.", gt=0
        ),
    )

    # Tenants, admin, webhooks.
    tenants: tuple[TenantConfig, ...] = field(
        default=(),
        metadata=doc(
            "Tenants (token secrets, limits, origins) as `[[tenants]]` tables; docs/tenants.md.",
            env=False,
            default_text="none",
        ),
    )
    admin_token: Secret = field(
        default_factory=_unset,
        metadata=doc(
            "Bearer token for `/admin/stats`; unset: the endpoint is off.",
            secret=True,
            default_text="unset",
        ),
    )
    webhook_secret: Secret = field(
        default_factory=_unset,
        metadata=doc(
            "Enables `/v1/webhooks/layers`; comma-separated secrets during a rotation.",
            alias="LAYERS_WEBHOOK_SECRET",
            secret=True,
            default_text="unset",
        ),
    )
    token_audience: str = field(
        default="layers-progress-proxy",
        metadata=doc("The `aud` claim capability tokens must carry.", required=True),
    )

    @property
    def worker_count(self) -> int:
        """How many worker processes ``serve`` runs."""
        return (os.cpu_count() or 1) if self.workers == "auto" else int(self.workers)

    @functools.cached_property
    def cadence(self) -> CadenceRules:
        """The cadence knobs as the pure cadence module takes them."""
        return CadenceRules(
            default_interval_s=self.default_interval_s,
            slow_interval_s=self.slow_interval_s,
            slow_after_s=self.slow_after_s,
            floor_s=self.floor_s,
            list_interval_s=self.project_poll_s,
        )

    @property
    def budget_per_min(self) -> float:
        """Upstream GETs per minute all replicas together may spend."""
        return self.rate_per_min * self.budget_share

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests and the demo use this)."""
        return dataclasses.replace(self, **changes)
