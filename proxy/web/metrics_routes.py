"""``GET /metrics`` and the response hook that counts every client request."""

from __future__ import annotations

import asyncio
import contextlib
import os

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from proxy.metrics import Gauges, Metrics, cache_outcome, make_registry
from proxy.metrics_group import group_text, publish_forever
from proxy.store.errors import StoreError
from proxy.web import keys
from proxy.web.ops import require_admin
from proxy.workers import GROUP_DIR_ENV, WORKER_INDEX_ENV


def count_response(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """One client request, by route template, status class and cache.

    The edge calls this as it answers (a stream's handler as it sends the head): cheaper than
    an ``on_response_prepare`` hook, which costs every request a signal and a coroutine.
    """
    if not isinstance(request, web.Request) or request.path == "/metrics":
        return  # not the application's request, or the scrape itself
    match_info = getattr(request, "match_info", None)
    metrics = request.app.get(keys.METRICS)
    if match_info is None or metrics is None:
        return  # refused before routing, or an app without metrics
    resource = match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    age = response.headers.get("Age")
    age_s = float(age) if age is not None and age.isascii() and age.isdigit() else None
    metrics.client_request(
        route, response.status, cache_outcome(response.headers.get("Cache-Status")), age_s
    )


def install_metrics(app: web.Application) -> None:
    """The counters (now); the registry is built once the services exist."""
    app[keys.METRICS] = Metrics()


def build_registry(app: web.Application) -> None:
    """Bind the scrape-time gauges to the running services."""
    stats, scheduler = app[keys.STATS], app[keys.SCHEDULER]
    watching, store = app[keys.WATCHING], app[keys.STORE]
    settings = app[keys.SETTINGS]
    gauges = Gauges(
        streams_open=lambda: float(stats.streams_open),
        stream_events=lambda: float(stats.stream_events),
        watched_resources=lambda: float(watching.interest.watched_count()),
        leases_held=lambda: float(len(scheduler.owned_keys())),
        budget_per_minute=lambda: float(settings.budget_per_min),
        cooldown_s=lambda: app[keys.METRICS].cooldown_s,
        tenant_upstream=lambda: dict(stats.tenant_upstream),
        redis_errors=lambda: float(store.health.errors),
    )
    app[keys.METRICS_REGISTRY] = make_registry(app[keys.METRICS], gauges)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; the admin token is required when one is configured."""
    app = request.app
    if app[keys.SETTINGS].admin_token:
        require_admin(request)
    store = app[keys.STORE]
    if store.health.up:  # read at scrape time; a down Redis keeps the last value, at once
        with contextlib.suppress(StoreError):
            app[keys.METRICS].cooldown_s = await store.cooldown_left_ms() / 1000
    registry = app[keys.METRICS_REGISTRY]
    group_dir, index = os.environ.get(GROUP_DIR_ENV), os.environ.get(WORKER_INDEX_ENV)
    if group_dir and index is not None:
        body = group_text(registry, group_dir, index)  # --workers: the whole group
    else:
        body = generate_latest(registry)
    return web.Response(
        body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"}
    )


async def publish_group_metrics(app: web.Application) -> None:
    """In a worker of ``serve --workers``: share this worker's metrics with the group."""
    group_dir, index = os.environ.get(GROUP_DIR_ENV), os.environ.get(WORKER_INDEX_ENV)
    if group_dir and index is not None:
        await publish_forever(app[keys.METRICS_REGISTRY], group_dir, index)
    else:
        await asyncio.Event().wait()  # nothing to share: park until cancelled
