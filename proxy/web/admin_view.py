"""The admin view: ``GET /admin`` (a page with no data in it) and ``GET /admin/state`` (its feed).

The feed describes the replica that answers it and nothing else: behind a balancer each read
may come from another replica, so ``replica.id`` names which. It is built from what the replica
keeps in memory plus one Redis read (the cooldown), so a page reading it every second costs
little; the resource list is bounded (``RESOURCE_ROWS_MAX``, soonest poll first) so a replica
with 10,000 resources still answers in about 20 ms.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from proxy import __version__
from proxy.snapshot import Snapshot
from proxy.store.connect import is_embedded
from proxy.store.errors import StoreError
from proxy.tenancy.config import TenantConfig
from proxy.web import keys
from proxy.web.ops import require_admin
from proxy.web.static_routes import STATIC_DIR

RESOURCE_ROWS_MAX = 500
# Per-tenant rates are measured over this window (or since start-up, while younger).
WINDOW_S = 60.0
# A read records the counters at most this often, so the samples stay ~60 however many read.
_SAMPLE_EVERY_S = 1.0
# An upstream error message is shown up to this length (it is what clients get in the envelope).
_MESSAGE_MAX = 200

# The page holds no data, loads only its own script and style, and is never framed.
_PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}
_FEED_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class RecentCounts:
    """How much each of a set of growing counters rose over about the last ``WINDOW_S``.

    A read records the totals (at most once a second) and compares them with the newest sample
    at least a window old, else the oldest one (the start-up sample of zeros), so the span is a
    minute once a page has been open that long and "since start-up" before.
    """

    def __init__(self) -> None:
        self._samples: deque[tuple[float, dict[str, float]]] = deque()

    def start(self, at: float) -> None:
        """Counting starts at ``at`` (every counter 0)."""
        self._samples.clear()
        self._samples.append((at, {}))

    def rise(self, now: float, totals: dict[str, float]) -> tuple[dict[str, float], float]:
        """(rise of each counter, span in seconds) up to ``now``."""
        if not self._samples or now - self._samples[-1][0] >= _SAMPLE_EVERY_S:
            self._samples.append((now, dict(totals)))
        while len(self._samples) > 1 and now - self._samples[1][0] >= WINDOW_S:
            self._samples.popleft()
        base_at, base = self._samples[0]
        return {name: value - base.get(name, 0.0) for name, value in totals.items()}, now - base_at


@dataclass
class AdminMemory:
    """What the view keeps between reads: when the replica started, recent per-tenant counts."""

    started_at: float | None = None
    upstream: RecentCounts = field(default_factory=RecentCounts)
    clients: RecentCounts = field(default_factory=RecentCounts)


ADMIN_MEMORY = web.AppKey("admin_memory", AdminMemory)


def setup_admin_view(app: web.Application) -> None:
    """Give the view its memory; the clock starts once the services have started."""
    app[ADMIN_MEMORY] = AdminMemory()

    async def mark_started(app: web.Application) -> None:
        now = app[keys.CLOCK].monotonic()
        memory = app[ADMIN_MEMORY]
        memory.started_at = now
        memory.upstream.start(now)
        memory.clients.start(now)

    app.on_startup.append(mark_started)  # after every cleanup_ctx: the services exist


async def admin_page(request: web.Request) -> web.FileResponse:
    """GET /admin: the live admin page (no token needed: the data comes from /admin/state)."""
    return web.FileResponse(STATIC_DIR / "admin.html", headers=_PAGE_HEADERS)


async def admin_state(request: web.Request) -> web.Response:
    """GET /admin/state: this replica's leases, cadences, budget, tenants and Redis, as JSON."""
    require_admin(request)
    state = await build_state(request.app)
    return web.Response(
        body=orjson.dumps(state), content_type="application/json", headers=_FEED_HEADERS
    )


async def build_state(app: web.Application) -> dict[str, Any]:
    """The feed: one JSON-ready snapshot of this replica."""
    clock = app[keys.CLOCK]
    now, now_ms = clock.monotonic(), int(clock.wall() * 1000)
    return {
        "generated_ms": now_ms,
        "replica": _replica(app, now),
        "redis": _redis(app),
        "budget": await _budget(app),
        "tenants": _tenants(app, now),
        "resources": _resources(app, now, now_ms),
    }


def _replica(app: web.Application, now: float) -> dict[str, Any]:
    settings = app[keys.SETTINGS]
    started = app[ADMIN_MEMORY].started_at
    return {
        "id": settings.replica_id,
        "pid": os.getpid(),
        "version": __version__,
        "uptime_s": round(now - started, 3) if started is not None else 0.0,
        "auth_mode": settings.auth_mode,
    }


def _redis(app: web.Application) -> dict[str, Any]:
    """Up or down as every caller of the store sees it; the address never has the password."""
    health = app[keys.STORE].health
    return {
        "address": health.address,
        "embedded": is_embedded(app[keys.SETTINGS].redis_url),
        "up": health.up,
        "checked": health.checked,
        # RedisHealth stamps its changes with time.monotonic, so the age is read against it.
        "since_s": round(max(0.0, time.monotonic() - health.changed_at), 1),
        "last_error": health.last_error,
        "errors": health.errors,
    }


async def _budget(app: web.Application) -> dict[str, Any]:
    """This replica's upstream requests in the last minute against the cluster's enforced cap."""
    settings, store = app[keys.SETTINGS], app[keys.STORE]
    used = app[keys.METRICS].upstream_last_minute()
    cap = settings.budget_per_min
    cooldown_ms: int | None = None
    if store.health.up:  # while Redis is down the store would refuse at once anyway
        with contextlib.suppress(StoreError):
            cooldown_ms = await store.cooldown_left_ms()
    held: dict[str, int] = {}
    for reason, _ in app[keys.SCHEDULER].held_back.values():
        held[reason] = held.get(reason, 0) + 1
    return {
        "tier_per_min": settings.rate_per_min,
        "share": settings.budget_share,
        "cap_per_min": cap,
        "used_last_minute": used,
        "used_ratio": round(used / cap, 4) if cap else 0.0,
        "cooldown_ms": cooldown_ms,
        "held_back": held,
    }


def _tenants(app: web.Application, now: float) -> dict[str, Any]:
    """Each tenant's recent upstream share on this replica against its fair share."""
    stats, settings, memory = app[keys.STATS], app[keys.SETTINGS], app[ADMIN_MEMORY]
    configured = {t.id: t for t in settings.tenants}
    fair = app[keys.CENSUS].tenant_view()
    upstream, span_s = memory.upstream.rise(now, dict(stats.tenant_upstream))
    clients, _ = memory.clients.rise(now, {t: float(n) for t, n in stats.tenant_requests.items()})
    upstream_sum = sum(upstream.values())
    allocated_sum = sum(v["allocated_per_min"] for v in fair.values())
    rows = []
    for tenant in sorted(set(configured) | set(stats.tenant_requests) | set(upstream) | set(fair)):
        view = fair.get(tenant, {})
        allocated = view.get("allocated_per_min", 0.0)
        rows.append(
            {
                **_tenant_config(configured.get(tenant)),
                "id": tenant,
                "client_requests": stats.tenant_requests.get(tenant, 0),
                "upstream_requests": round(stats.tenant_upstream.get(tenant, 0.0), 2),
                "recent_client_requests": round(clients.get(tenant, 0.0)),
                "recent_upstream_requests": round(upstream.get(tenant, 0.0), 2),
                "upstream_share": _ratio(upstream.get(tenant, 0.0), upstream_sum),
                "resources": int(view.get("resources", 0)),
                "demand_per_min": view.get("demand_per_min", 0.0),
                "fair_per_min": allocated,
                "fair_share": _ratio(allocated, allocated_sum),
            }
        )
    return {"window_s": round(span_s, 1), "rows": rows}


def _tenant_config(config: TenantConfig | None) -> dict[str, Any]:
    """Weight and limits from the config file (None for traffic of no configured tenant)."""
    if config is None:
        return {"weight": None, "limits": None}
    limits = {
        "requests_per_second": config.requests_per_second,
        "max_streams": config.max_streams,
        "max_watched": config.max_watched,
    }
    return {"weight": config.weight, "limits": limits}


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole > 0 else None


def _resources(app: web.Application, now: float, now_ms: int) -> dict[str, Any]:
    """Resources this replica serves or polls, soonest poll first, at most ``RESOURCE_ROWS_MAX``."""
    scheduler, cache = app[keys.SCHEDULER], app[keys.WATCHING].cache
    held = set(scheduler.owned_keys())
    everything = held | set(cache.keys())

    def order(key: str) -> tuple[int, float, str]:
        if key not in held:
            return (1, 0.0, key)
        due = scheduler.due_at(key)
        return (0, now if due is None else due, key)  # a poll under way is due now

    chosen = heapq.nsmallest(RESOURCE_ROWS_MAX, everything, key=order)
    return {
        "total": len(everything),
        "leases_held": len(held),
        "shown": len(chosen),
        "rows": [_resource_row(app, key, key in held, now, now_ms) for key in chosen],
    }


def _resource_row(
    app: web.Application, key: str, held: bool, now: float, now_ms: int
) -> dict[str, Any]:
    scheduler = app[keys.SCHEDULER]
    snap = app[keys.WATCHING].cache.get(key)
    kind, _, rest = key.partition(":")  # "<kind>:<org or ->:<id>" (ResourceRef.key)
    org, _, rid = rest.partition(":")
    lease = scheduler.leases.get(key) if held else None
    due = scheduler.due_at(key) if held else None
    cadence = scheduler.polls.interval_s(snap) if snap is None or not snap.terminal else None
    row: dict[str, Any] = {
        "key": key,
        "kind": kind,
        "org": None if org == "-" else org,
        "id": rid,
        "lease_here": held,
        "fence": lease.fence if lease else None,
        "cadence_ms": round(cadence * 1000) if cadence is not None else None,
        "next_poll_in_ms": max(0, round((due - now) * 1000)) if due is not None else None,
        "polling_now": bool(lease and lease.in_flight),
        "failures": lease.failures if lease else 0,
        "held_back": scheduler.held_back.get(key, ("", 0))[0] or None,
    }
    row.update(_snapshot_fields(snap, now_ms))
    return row


def _snapshot_fields(snap: Snapshot | None, now_ms: int) -> dict[str, Any]:
    """The last poll's outcome as the snapshot records it, and how old the data is.

    ``upstream.status`` is what the proxy serves for the resource: the upstream's 200 or 404,
    or, while polls fail, the error status its clients get (the message says what Layers did).
    """
    if snap is None:
        return {
            "status": None,
            "stage": None,
            "terminal": False,
            "version": None,
            "upstream": None,
            "age_ms": None,
        }
    failing = bool(snap.error) and snap.error_ms >= snap.fetched_ms
    upstream = (
        {
            "ok": False,
            "status": snap.error_status,
            "code": snap.error_code,
            "message": snap.error[:_MESSAGE_MAX],
        }
        if failing
        else {"ok": True, "status": snap.status_code, "code": "", "message": ""}
    )
    return {
        "status": snap.status or None,
        "stage": snap.stage or None,
        "terminal": snap.terminal,
        "version": snap.version,
        "upstream": upstream,
        "age_ms": max(0, now_ms - snap.fetched_ms) if snap.fetched_ms else None,
    }
