"""The composition root: builds every client and service and owns their lifetimes.

One ``cleanup_ctx`` per resource, so start-up runs in dependency order (Redis, upstream, services)
and teardown in reverse: on shutdown the scheduler hands its leases back before Redis closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from proxy.clock import Clock, SystemClock
from proxy.logs import scrubber
from proxy.services.cache import SnapshotCache
from proxy.services.census import Census
from proxy.services.interest import InterestTracker
from proxy.services.scheduler import Scheduler
from proxy.services.stats import Stats
from proxy.services.subscriber import SnapshotSubscriber
from proxy.services.watching import Watching
from proxy.settings import Settings
from proxy.store.connect import RedisClients, make_clients, redis_address
from proxy.store.health import RedisHealth
from proxy.store.packing import use_hiredis_packing
from proxy.store.redis_store import BudgetPolicy, RedisStore
from proxy.streaming.hub import StreamHub
from proxy.tasks import spawn
from proxy.tenancy.access import Access
from proxy.tenancy.limits import TenantLimits
from proxy.tenancy.ownership import OwnershipCheck
from proxy.upstream.client import Transport, UpstreamClient
from proxy.web import keys
from proxy.web.cors import setup_cors
from proxy.web.metrics_routes import build_registry, install_metrics, publish_group_metrics
from proxy.web.routes import setup_routes

log = structlog.get_logger("proxy.app")

_UPSTREAM: web.AppKey[UpstreamClient] = web.AppKey("upstream")
_REDIS_CLIENTS: web.AppKey[RedisClients] = web.AppKey("redis_clients")
_SUBSCRIBER: web.AppKey[SnapshotSubscriber] = web.AppKey("subscriber")


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    transport: Transport | None = None,
    redis_clients: RedisClients | None = None,
) -> web.Application:
    """The proxy application. ``transport`` and ``redis_clients`` are seams for tests."""
    # No middleware: the edge (request ids, limits, error envelopes) is the server's request
    # handler (``proxy.web.middlewares.guard_handler``), one frame per request instead of three.
    app = web.Application(client_max_size=256 * 1024)
    app[keys.SETTINGS] = settings
    app[keys.CLOCK] = clock or SystemClock()
    app[keys.STATS] = Stats()
    app[keys.ACCESS] = Access(settings)
    install_metrics(app)
    scrubber().add(settings.layers_api_key.reveal())
    scrubber().add(settings.admin_token.reveal())
    for part in settings.webhook_secret.reveal().split(","):  # several during a rotation
        scrubber().add(part.strip())

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        clients = redis_clients or make_clients(
            settings.redis_url, timeout_s=settings.redis_timeout_s
        )
        app[_REDIS_CLIENTS] = clients
        use_hiredis_packing(clients[0])  # the commands client: every poll's round trips
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
            timeout_s=settings.redis_timeout_s,
            health=RedisHealth(redis_address(settings.redis_url)),
        )
        yield
        if redis_clients is None:
            for client in clients:
                await client.aclose()

    async def upstream_ctx(app: web.Application) -> AsyncIterator[None]:
        app[_UPSTREAM] = UpstreamClient.from_settings(
            settings, wall_clock=app[keys.CLOCK].wall, transport=transport
        )
        yield
        await app[_UPSTREAM].close()

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        clock, stats, store = app[keys.CLOCK], app[keys.STATS], app[keys.STORE]
        cache = SnapshotCache()
        census = Census(store=store, settings=settings, clock=clock)
        scheduler = Scheduler(
            store=store,
            upstream=app[_UPSTREAM],
            cache=cache,
            settings=settings,
            clock=clock,
            stats=stats,
            census=census,
            metrics=app[keys.METRICS],
        )
        limits = app[keys.LIMITS] = TenantLimits(store=store, settings=settings, clock=clock)
        # One round trip per flush writes the interest, the census and the tenant limits' sets.
        interest = InterestTracker(
            store=store,
            leases=scheduler.leases,
            cache=cache,
            settings=settings,
            clock=clock,
            census=census,
            limits=limits,
        )
        census.on_change.append(scheduler.reschedule_earlier)
        app[keys.CENSUS] = census
        subscriber = SnapshotSubscriber(
            pubsub_redis=app[_REDIS_CLIENTS][1],
            store=store,
            cache=cache,
            on_poke=scheduler.poke,
            # Pokes must reach a lease holder even when it has nothing cached (Cluster mode).
            extra_keys=scheduler.owned_keys,
        )
        app[keys.SCHEDULER] = scheduler
        # Token expiries on the wall clock Access verifies tokens with (its default, time.time).
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
        app[keys.ACCESS].owners = OwnershipCheck(app[keys.WATCHING])
        build_registry(app)
        tasks = [
            spawn(store.probe_forever(), "redis-probe"),
            spawn(publish_group_metrics(app), "group-metrics"),
            spawn(scheduler.run(), "scheduler"),
            spawn(scheduler.renew_forever(), "lease-renewal"),
            spawn(interest.run(), "interest-flush"),
            spawn(census.run(), "census"),
            spawn(hub.run(), "stream-heartbeats"),
            spawn(subscriber.listen_forever(), "subscriber"),
            spawn(subscriber.refresh_forever(), "subscriber-refresh"),
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
        await limits.aclose()
        await scheduler.shutdown()
        log.info("proxy_stopped", replica=settings.replica_id)

    app.cleanup_ctx.append(redis_ctx)
    app.cleanup_ctx.append(upstream_ctx)
    app.cleanup_ctx.append(services_ctx)
    setup_routes(app)
    setup_cors(app, settings)  # after the routes: preflight route + prepare hook, token mode only
    return app
