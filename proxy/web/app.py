"""The composition root: builds every client and service and owns their lifetimes.

One ``cleanup_ctx`` per resource, so start-up runs in dependency order (Redis, upstream, services)
and teardown in reverse: on shutdown the scheduler hands its leases back before Redis closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import structlog
from aiohttp import web
from redis.asyncio import Redis

from proxy.clock import Clock, SystemClock
from proxy.logs import scrubber
from proxy.services.cache import SnapshotCache
from proxy.services.census import Census
from proxy.services.interest import InterestTracker
from proxy.services.scheduler import Scheduler
from proxy.services.stats import Stats
from proxy.services.subscriber import SnapshotSubscriber
from proxy.services.tenant_limits import TenantLimits
from proxy.services.watching import Watching
from proxy.settings import Settings
from proxy.store.connect import make_clients
from proxy.store.redis_store import BudgetPolicy, RedisStore
from proxy.upstream.client import AiohttpTransport, Transport, UpstreamClient
from proxy.web import keys
from proxy.web.access import Access
from proxy.web.cors import setup_cors
from proxy.web.middlewares import make_edge_middleware
from proxy.web.routes import setup_routes
from proxy.web.streams import StreamHub

log = structlog.get_logger("proxy.app")

_UPSTREAM: web.AppKey[UpstreamClient] = web.AppKey("upstream")
_REDIS_CLIENTS: web.AppKey[tuple[Redis, Redis]] = web.AppKey("redis_clients")
_SUBSCRIBER: web.AppKey[SnapshotSubscriber] = web.AppKey("subscriber")


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    transport: Transport | None = None,
    redis_clients: tuple[Redis, Redis] | None = None,
) -> web.Application:
    """The proxy application. ``transport`` and ``redis_clients`` are seams for tests."""
    app = web.Application(middlewares=[make_edge_middleware(settings)], client_max_size=256 * 1024)
    app[keys.SETTINGS] = settings
    app[keys.CLOCK] = clock or SystemClock()
    app[keys.STATS] = Stats()
    app[keys.ACCESS] = Access(settings)
    scrubber().add(settings.layers_api_key.reveal())
    scrubber().add(settings.admin_token.reveal())
    for part in settings.webhook_secret.reveal().split(","):  # several during a rotation
        scrubber().add(part.strip())

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        clients = redis_clients or make_clients(
            settings.redis_url, timeout_s=settings.redis_timeout_s
        )
        app[_REDIS_CLIENTS] = clients
        app[keys.STORE] = RedisStore(
            clients[0],
            owner=settings.replica_id,
            lease_ttl_ms=int(settings.lease_ttl_s * 1000),
            # The flush interval is subtracted so that polling stops within the linger of the
            # last request, not a flush later.
            linger_ms=max(1000, int((settings.linger_s - settings.interest_flush_s) * 1000)),
            snapshot_ttl_ms=int(settings.snapshot_ttl_s * 1000),
            budget=BudgetPolicy.per_minute(
                settings.budget_per_min, burst=max(1, int(settings.budget_per_min // 20))
            ),
        )
        yield
        if redis_clients is None:
            for client in clients:
                await client.aclose()

    async def upstream_ctx(app: web.Application) -> AsyncIterator[None]:
        app[_UPSTREAM] = UpstreamClient(
            base_url=settings.layers_api_url,
            api_key=settings.layers_api_key,
            transport=transport
            or AiohttpTransport(
                max_connections=settings.upstream_max_connections,
                connect_timeout_s=settings.upstream_connect_timeout_s,
            ),
            timeout_s=settings.upstream_timeout_s,
            wall_clock=app[keys.CLOCK].wall,
        )
        yield
        await app[_UPSTREAM].close()

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        clock, stats, store = app[keys.CLOCK], app[keys.STATS], app[keys.STORE]
        cache = SnapshotCache()
        scheduler = Scheduler(
            store=store,
            upstream=app[_UPSTREAM],
            cache=cache,
            settings=settings,
            clock=clock,
            stats=stats,
        )
        interest = InterestTracker(
            store=store, scheduler=scheduler, cache=cache, settings=settings, clock=clock
        )
        census = Census(store=store, settings=settings, clock=clock)
        scheduler.census = census
        census.on_change.append(scheduler.reschedule_earlier)
        interest.census = census
        app[keys.CENSUS] = census
        subscriber = SnapshotSubscriber(
            pubsub_redis=app[_REDIS_CLIENTS][1], store=store, cache=cache, on_poke=scheduler.poke
        )
        app[keys.SCHEDULER] = scheduler
        app[keys.LIMITS] = TenantLimits(store=store, settings=settings, clock=clock)
        hub = app[keys.STREAM_HUB] = StreamHub(settings.sse_heartbeat_s)
        app[_SUBSCRIBER] = subscriber
        app[keys.WATCHING] = Watching(
            cache=cache,
            store=store,
            scheduler=scheduler,
            interest=interest,
            settings=settings,
            clock=clock,
            stats=stats,
        )
        tasks = [
            _spawn(scheduler.run(), "scheduler"),
            _spawn(scheduler.renew_forever(), "lease-renewal"),
            _spawn(interest.run(), "interest-flush"),
            _spawn(census.run(), "census"),
            _spawn(hub.run(), "stream-heartbeats"),
            _spawn(subscriber.listen_forever(), "subscriber"),
            _spawn(subscriber.refresh_forever(), "subscriber-refresh"),
        ]
        # Serve only once snapshots published by other replicas can reach us.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settings.redis_timeout_s * 2):
                await subscriber.connected.wait()
        log.info("proxy_started", replica=settings.replica_id, auth=settings.auth_mode)
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await app[keys.LIMITS].aclose()
        await scheduler.shutdown()
        log.info("proxy_stopped", replica=settings.replica_id)

    app.cleanup_ctx.append(redis_ctx)
    app.cleanup_ctx.append(upstream_ctx)
    app.cleanup_ctx.append(services_ctx)
    setup_routes(app)
    setup_cors(app, settings)  # after the routes: preflight route + prepare hook, token mode only
    return app


def _spawn(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    task = asyncio.create_task(coro, name=name)

    def _done(t: asyncio.Task[None]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.error("background_task_died", task=name, error=type(t.exception()).__name__)

    task.add_done_callback(_done)
    return task
