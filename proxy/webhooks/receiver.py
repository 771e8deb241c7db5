"""``POST /v1/webhooks/layers``: verify, deduplicate across replicas, answer 202, refresh after.

Order of checks: secret configured (404 otherwise), body size (413), signature (401), event id
and body (400), then ``SET NX`` on the event id in Redis (a replayed id answers 409
``CONFLICT``). Only a new event reaches the background refresh, which pokes the resource's
poller through ``Watching.refresh_now``; the poller writes the new snapshot through the normal
fenced path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Protocol

import orjson
import structlog
from aiohttp import web

from proxy.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    Unauthenticated,
    Unavailable,
)
from proxy.resources import ResourceRef
from proxy.store.errors import StoreError
from proxy.store.redis_store import RedisStore
from proxy.web import keys
from proxy.webhooks.events import Event, InvalidEvent, is_event_id, parse_event
from proxy.webhooks.signature import WebhookSignatureError, parse_secrets, verify_signature

log = structlog.get_logger("proxy.webhooks")

ROUTE = "/v1/webhooks/layers"
MAX_BODY_BYTES = 256 * 1024  # Layers events are a few KB; this only stops abuse
_CHUNK_BYTES = 64 * 1024
_JSON = "application/json"


class Refresher(Protocol):
    """The one thing the receiver needs from ``Watching``."""

    async def refresh_now(self, ref: ResourceRef) -> None: ...


class WebhookWork:
    """The refreshes webhooks started, kept so that shutdown can cancel and await them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> bool:
        """Run ``coro`` in the background; False (and not run) once shutdown has begun."""
        if self._closed:
            coro.close()
            return False
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self) -> None:
        """Wait until no refresh is running (tests call this instead of sleeping)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Refuse new work, cancel what runs and wait for it (polling covers what is lost)."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)


WEBHOOK_WORK = web.AppKey("webhook_work", WebhookWork)


def add_webhook_routes(app: web.Application) -> None:
    """Register ``POST /v1/webhooks/layers`` and the shutdown of its background work.

    Call it after the services' ``cleanup_ctx`` entries: teardown runs in reverse, so the
    refreshes stop before the scheduler hands back its leases and Redis closes.
    """
    app[WEBHOOK_WORK] = WebhookWork()
    app.router.add_post(ROUTE, receive_webhook)
    app.cleanup_ctx.append(_work_ctx)


async def _work_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[WEBHOOK_WORK].aclose()


async def receive_webhook(request: web.Request) -> web.Response:
    """POST /v1/webhooks/layers: 202 for a new event, 200 for a repeated id, 4xx with no effect."""
    app = request.app
    secrets = parse_secrets(app[keys.SETTINGS].webhook_secret.reveal())
    if not secrets:
        # 404, not 5xx: nothing is wrong with the proxy, the endpoint is simply not there.
        raise NotFound(
            "Layers webhooks are not enabled on this proxy: set LAYERS_WEBHOOK_SECRET to the "
            "endpoint's signing secret and restart."
        )
    raw = await _read_capped(request, MAX_BODY_BYTES)
    try:
        verified = verify_signature(
            request.headers.get("X-Layers-Signature", ""), raw, secrets, app[keys.CLOCK].wall()
        )
    except WebhookSignatureError as exc:
        # Only the reason: the header and body are the sender's and could be anything.
        log.warning("webhook_rejected", reason=exc.reason)
        raise Unauthenticated(exc.message, details={"reason": exc.reason}) from None
    event = _parse(request.headers.get("X-Layers-Event-Id"), raw)
    app[keys.STATS].webhooks_received += 1
    store = app[keys.STORE]
    try:
        # Through the store: bounded, health-recorded, refused at once while Redis is down.
        fresh = await store.mark_event_seen(event.id, app[keys.SETTINGS].replica_id or "1")
    except (StoreError, OSError) as exc:
        # Nothing was done, so a retry from Layers is safe and is what we want.
        log.warning("webhook_dedupe_failed", event_id=event.id, error=type(exc).__name__)
        raise Unavailable("The proxy cannot reach Redis to record this event; retry.") from None
    if not fresh:
        log.info("webhook_duplicate", event_id=event.id, type=event.type)
        # A replay is refused with a 4xx and no side effect (Layers does not retry a 4xx).
        raise Conflict(
            f"Event {event.id} was already received; replays are not processed again.",
            details={"eventId": event.id, "duplicate": True},
        )
    log.info(
        "webhook_received",
        event_id=event.id,
        type=event.type,
        old_secret=verified.secret_index > 0,
    )
    if event.refs:
        app[WEBHOOK_WORK].spawn(
            refresh_for(event, app[keys.WATCHING], store), name=f"webhook-{event.id}"
        )
    else:
        log.info("webhook_ignored", event_id=event.id, type=event.type)
    return _answer(request, 202, {"received": True})


async def refresh_for(event: Event, refresher: Refresher, store: RedisStore) -> None:
    """Ask for one poll of every resource ``event`` names that is worth it; never raises."""
    for ref in event.refs:
        try:
            skip = await skip_reason(store, ref, event.created_ms)
            if skip:
                log.info("webhook_refresh_skipped", event_id=event.id, key=ref.key, reason=skip)
                continue
            await refresher.refresh_now(ref)
            log.info("webhook_refresh", event_id=event.id, type=event.type, key=ref.key)
        except (StoreError, OSError) as exc:
            # Polling still delivers the change, just later.
            log.warning("webhook_refresh_failed", event_id=event.id, error=type(exc).__name__)
        except Exception:
            log.exception("webhook_refresh_failed", event_id=event.id)


async def skip_reason(store: RedisStore, ref: ResourceRef, created_ms: int | None) -> str:
    """Why refreshing ``ref`` would waste an upstream call ('' when it would not).

    Webhooks cover every job of the org, most of which nobody watches through the proxy; and a
    poll may already have seen the end (Layers' dispatcher lags by up to a minute).
    """
    if not await store.is_watched(ref.key):
        return "unwatched"
    snap = await store.read(ref.key)
    if snap is None or not snap.terminal or snap.status_code != 200:
        return ""
    if ref.kind.terminal_is_permanent:
        return "already_terminal"
    # A container can be regenerated, so its terminal snapshot only counts if it was fetched
    # after the event happened.
    if created_ms is not None and snap.fetched_ms >= created_ms:
        return "already_fresh"
    return ""


def _parse(event_id: str | None, raw: bytes) -> Event:
    if event_id is None:
        raise InvalidRequest("The X-Layers-Event-Id header is missing.")
    if not is_event_id(event_id):
        raise InvalidRequest("X-Layers-Event-Id must be evt_ followed by 26 letters or digits.")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The webhook body is not valid JSON.") from None
    try:
        return parse_event(event_id, payload)
    except InvalidEvent as exc:
        raise InvalidRequest(str(exc)) from None


async def _read_capped(request: web.Request, limit: int) -> bytes:
    too_large = PayloadTooLarge(f"The webhook body is larger than {limit // 1024} KB.")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.content.iter_chunked(_CHUNK_BYTES):
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _answer(request: web.Request, status: int, body: dict[str, Any]) -> web.Response:
    headers = {"Cache-Control": "no-store"}
    rid = keys.request_id(request)
    if isinstance(rid, str):
        headers["X-Request-Id"] = rid
    return web.Response(status=status, body=orjson.dumps(body), content_type=_JSON, headers=headers)
