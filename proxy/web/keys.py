"""Typed application keys for the objects the composition root shares with handlers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from proxy.clock import Clock
from proxy.metrics import Metrics
from proxy.services.stats import Stats
from proxy.settings import Settings

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from proxy.services.census import Census
    from proxy.services.scheduler import Scheduler
    from proxy.services.watching import Watching
    from proxy.store.redis_store import RedisStore
    from proxy.streaming.hub import StreamHub
    from proxy.tenancy.access import Access
    from proxy.tenancy.limits import TenantLimits

REQUEST_ID = web.RequestKey("request_id", str)
SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
STATS = web.AppKey("stats", Stats)
STORE: web.AppKey[RedisStore] = web.AppKey("store")
WATCHING: web.AppKey[Watching] = web.AppKey("watching")
SCHEDULER: web.AppKey[Scheduler] = web.AppKey("scheduler")
ACCESS: web.AppKey[Access] = web.AppKey("access")
LIMITS: web.AppKey[TenantLimits] = web.AppKey("limits")
CENSUS: web.AppKey[Census] = web.AppKey("census")
STREAM_HUB: web.AppKey[StreamHub] = web.AppKey("stream_hub")
METRICS = web.AppKey("metrics", Metrics)
METRICS_REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("metrics_registry")


def set_request_id(request: web.BaseRequest, rid: str) -> None:
    """Give ``request`` its id (the edge does, first).

    On the connection when its protocol has a slot for it (the edge's ``EdgeProtocol``, which
    handles one request at a time): a request whose state stays empty has no keys table, which
    an open stream would keep for its whole life. Elsewhere (test servers) in the request's state.
    """
    protocol = request.protocol
    if hasattr(type(protocol), "request_id"):
        protocol.request_id = rid  # type: ignore[attr-defined]
    else:
        request[REQUEST_ID] = rid


def request_id(request: web.BaseRequest) -> str | None:
    """The id the edge gave ``request`` (None for a request that did not pass the edge)."""
    rid = getattr(request.protocol, "request_id", None)
    if isinstance(rid, str):
        return rid
    return request.get(REQUEST_ID)
