"""Helpers for the webhook suite: signed posts, a fake Watching, a tiny app per replica."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import orjson
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from proxy.clock import ManualClock
from proxy.redaction import Secret
from proxy.resources import ResourceRef
from proxy.services.stats import Stats
from proxy.settings import Settings
from proxy.store.redis_store import RedisStore
from proxy.web import keys
from proxy.webhooks import WEBHOOK_WORK, add_webhook_routes, sign
from proxy.webhooks.receiver import WebhookWork

SECRET = "whsec_test_signing_secret_01"
EVT = "evt_01JABCDEFGHJKMNPQRSTVWXYZ0"
JOB_ID = "job_01JABCDEFGHJKMNPQRSTVWXYZ1"
CNT = "cnt_6f1c2f2e-3b7a-4a57-9a59-0c2d9d1b1e11"


def job_event(
    event_id: str = EVT, event_type: str = "job.completed", **data: Any
) -> dict[str, Any]:
    """A job.* envelope for JOB_ID (extra fields go into data)."""
    return {
        "id": event_id,
        "type": event_type,
        "createdAt": "2026-04-18T09:30:05Z",
        "data": {"jobId": JOB_ID, "kind": "content_generate", **data},
    }


class FakeWatching:
    """Records ``refresh_now`` calls; each call waits for ``gate`` (open unless cleared)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.cancelled = 0
        self.entered = asyncio.Event()  # set once the first call has started
        self.gate = asyncio.Event()
        self.gate.set()

    async def refresh_now(self, ref: ResourceRef) -> None:
        """Record the ref's key, then wait for the gate."""
        self.calls.append(ref.key)
        self.entered.set()
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


@dataclass
class Replica:
    """One app instance (a proxy replica's webhook side) behind an aiohttp test client."""

    client: TestClient[web.Request, web.Application]
    watching: FakeWatching
    clock: ManualClock
    sent: list[str] = field(default_factory=list)

    @property
    def app(self) -> web.Application:
        """The served application."""
        return self.client.server.app  # type: ignore[return-value]

    @property
    def store(self) -> RedisStore:
        """The replica's store on the shared fake Redis."""
        return self.app[keys.STORE]

    @property
    def stats(self) -> Stats:
        """The replica's counters."""
        return self.app[keys.STATS]

    @property
    def work(self) -> WebhookWork:
        """The background refreshes."""
        return self.app[WEBHOOK_WORK]

    async def post(
        self,
        payload: dict[str, Any] | bytes,
        *,
        event_id: str | None = EVT,
        secret: str = SECRET,
        t: int | None = None,
        signature: str | None = None,
    ) -> ClientResponse:
        """POST a webhook signed with ``secret`` at ``t`` (default: the replica's wall clock)."""
        raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        stamp = int(self.clock.wall()) if t is None else t
        headers = {"Content-Type": "application/json"}
        if signature is None:
            signature = f"t={stamp},v1={sign(secret, stamp, raw)}"
        if signature:
            headers["X-Layers-Signature"] = signature
            self.sent.append(signature)
        if event_id is not None:
            headers["X-Layers-Event-Id"] = event_id
        return await self.client.post("/v1/webhooks/layers", data=raw, headers=headers)

    async def watch(self, *refs: ResourceRef) -> None:
        """Mark ``refs`` as watched, the way a client request does (the watch key, no lease)."""
        await self.store.touch_many([(ref.key, False, -1) for ref in refs])


ReplicaFactory = Callable[..., Awaitable[Replica]]


def build_app(
    server: fakeredis.FakeServer, clock: ManualClock, watching: FakeWatching, secret: str
) -> web.Application:
    """The smallest app the receiver runs in: the app keys it reads, a store (serve it with
    ``edge_client``)."""
    settings = Settings(
        layers_api_key=Secret("lp_test_unused"),
        webhook_secret=Secret(secret),
        auth_mode="none",
        replica_id=f"replica-{id(watching)}",
    )
    app = web.Application()
    app[keys.SETTINGS] = settings
    app[keys.CLOCK] = clock
    app[keys.STATS] = Stats()
    redis = fakeredis.FakeAsyncRedis(server=server)
    app[keys.STORE] = RedisStore(
        redis,
        owner=settings.replica_id,
        lease_ttl_ms=6000,
        linger_ms=15000,
        snapshot_ttl_ms=86_400_000,
    )
    app[keys.WATCHING] = watching  # type: ignore[assignment]

    async def redis_ctx(_: web.Application) -> AsyncIterator[None]:
        yield
        await redis.aclose()

    app.cleanup_ctx.append(redis_ctx)
    add_webhook_routes(app)
    return app
