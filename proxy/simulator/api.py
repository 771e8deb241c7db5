"""The Layers stand-in: /v1 handlers, their auth → budget → answer pipeline, and the log."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Literal

import orjson
from aiohttp import web

from proxy.simulator.budget import BudgetDecision
from proxy.simulator.context import CTX_KEY, STATE_KEY, ApiContext
from proxy.simulator.errors import JSON, error_response, from_http_exception
from proxy.simulator.faults import DISTORTING, FaultRule
from proxy.simulator.ids import (
    canonical_container_id,
    canonical_job_id,
    canonical_project_id,
    key_id_of,
)
from proxy.simulator.listing import ListingError, project_content
from proxy.simulator.misbehaviour import (
    GARBAGE_BODY,
    drip,
    foreign_body,
    hang,
    padded,
    reflected,
    reset_connection,
    stall,
    truncate,
    without_fields,
)
from proxy.simulator.state import AuthFailure, Identity, SimulatorState

Kind = Literal["progress", "container", "job", "project_content", "whoami", "other"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ORG_HEADER = "X-Layers-Organization"
ENDPOINT_CLASS = "read-light"  # every GET lives in this bucket
SCOPES: dict[Kind, str | None] = {
    "progress": "content:read",
    "container": "content:read",
    "job": "jobs:read",
    "project_content": "content:read",
    "whoami": None,
    "other": None,
}
log = logging.getLogger(__name__)


def presented_key(headers: Mapping[str, str]) -> str | None:
    """Return the API key a request carries; X-Api-Key wins over Authorization: Bearer."""
    key = headers.get("X-Api-Key")
    if key:
        return key.strip()
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def etag_of(body: bytes) -> str:
    """Return a strong ETag derived from the body bytes."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Tell whether an If-None-Match header matches ``etag`` (weak comparison, RFC 9110)."""
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every response an X-Request-Id and envelope errors; log and meter /v1 requests."""
    state = request.app[STATE_KEY]
    request_id = state.new_request_id()
    if request.path != "/v1" and not request.path.startswith("/v1/"):
        response = await _enveloped(request, handler, request_id)
        response.headers["X-Request-Id"] = request_id
        return response
    record = state.open_record(request_id, request.method, request.path)
    record.if_none_match = request.headers.get("If-None-Match")
    key = presented_key(request.headers)
    # Only the key id is kept: the key itself must never reach the log.
    record.key_id = key_id_of(key) if key else None
    ctx = ApiContext(request_id, record, key)
    request[CTX_KEY] = ctx
    status: int | None = None
    try:
        response = await _enveloped(request, handler, request_id)
        _stamp(response, request_id, ctx.budget or state.peek_budget(key))
        status = response.status if ctx.answered else None
        body = getattr(response, "body", None)
        if status is not None and record.bytes is None:
            record.bytes = len(body) if isinstance(body, bytes) else 0
        return response
    finally:
        state.log.finish(record, status)


async def _enveloped(request: web.Request, handler: Handler, request_id: str) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        return from_http_exception(exc, request_id)
    except Exception:
        log.exception("simulator handler failed")
        return error_response(500, "INTERNAL", "Simulator error.", request_id)


def _stamp(response: web.StreamResponse, request_id: str, budget: BudgetDecision) -> None:
    response.headers["X-Request-Id"] = request_id
    response.headers["X-RateLimit-Endpoint-Class"] = ENDPOINT_CLASS
    response.headers["X-RateLimit-Limit"] = str(budget.limit)
    response.headers["X-RateLimit-Remaining"] = str(budget.remaining)
    response.headers["X-RateLimit-Reset"] = str(budget.reset_s)


def api_handler(kind: Kind) -> Handler:
    """Return the handler for one kind of /v1 resource."""

    async def handle(request: web.Request) -> web.StreamResponse:
        return await _serve(request, kind)

    handle.__name__ = f"get_{kind}"
    return handle


async def _serve(request: web.Request, kind: Kind) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    ctx = request[CTX_KEY]
    raw_id = request.match_info.get("id")
    ctx.record.kind = kind
    if raw_id is not None:
        ctx.record.resource_id = _CANONICAL.get(kind, canonical_container_id)(raw_id) or raw_id
    # Faults strike first, like a sick load balancer: no auth, no budget spent.
    rule = state.take_fault(request.path)
    if rule is not None:
        ctx.record.fault = rule.kind
        if rule.kind == "latency":
            await asyncio.sleep(rule.latency_ms / 1000)
        elif rule.kind not in DISTORTING:
            return await _misbehave(request, state, ctx, rule)
    distortion = rule if rule is not None and rule.kind in DISTORTING else None
    auth = state.authenticate(ctx.presented_key, request.headers.get(ORG_HEADER), SCOPES[kind])
    if isinstance(auth, AuthFailure):
        return error_response(auth.status, auth.code, auth.message, ctx.request_id)
    ctx.record.org = auth.org
    ctx.budget = state.spend(auth)
    if not ctx.budget.allowed:
        return _rate_limited(state, ctx.request_id, ctx.budget.retry_after_s)
    response = _answer(request, state, ctx, kind, raw_id or "", auth, distortion)
    if distortion is None or response.status != 200:
        return response
    if distortion.kind == "truncated":
        truncate(response)
    elif distortion.kind == "drip":
        # The middleware stamps headers after the handler, too late for a streamed answer.
        _stamp(response, ctx.request_id, ctx.budget)
        ctx.record.bytes = len(response.body) if isinstance(response.body, bytes) else 0
        return await drip(request, response, state, distortion.latency_ms / 1000)
    return response


_CANONICAL: dict[Kind, Callable[[str], str | None]] = {
    "job": canonical_job_id,
    "project_content": canonical_project_id,
}


def _lookup(
    request: web.Request, state: SimulatorState, kind: Kind, raw_id: str, auth: Identity
) -> dict[str, Any] | None:
    if kind == "project_content":
        project = canonical_project_id(raw_id)
        query = request.query
        return (
            None
            if project is None
            else project_content(
                state,
                project,
                auth.org,
                statuses=query.getall("status", []),
                cursor=query.get("cursor"),
                limit=query.get("limit"),
            )
        )
    if kind == "progress":
        return state.progress(raw_id, auth.org)
    if kind == "container":
        return state.container(raw_id, auth.org)
    if kind == "job":
        return state.job(raw_id, auth.org)
    return _whoami(auth)


def _distorted(
    request: web.Request, state: SimulatorState, kind: Kind, body: dict[str, Any], rule: FaultRule
) -> dict[str, Any]:
    """The body a body-changing fault answers with instead of the real one."""
    if rule.kind == "wrong_id":
        return foreign_body(kind, state) or body
    if rule.kind == "missing_fields":
        return without_fields(kind, body)
    if rule.kind == "oversize":
        return padded(body, rule.size_bytes)
    if rule.kind == "reflect":
        return reflected(kind, body, request.headers)
    return body


def _answer(
    request: web.Request,
    state: SimulatorState,
    ctx: ApiContext,
    kind: Kind,
    raw_id: str,
    auth: Identity,
    distortion: FaultRule | None = None,
) -> web.Response:
    if kind == "other":
        return error_response(404, "NOT_FOUND", "No such route.", ctx.request_id)
    try:
        body = _lookup(request, state, kind, raw_id, auth)
    except ListingError as exc:
        return error_response(400, "VALIDATION_ERROR", str(exc), ctx.request_id)
    if body is None:
        # Another org's resource is a 404 too, so existence never leaks.
        return error_response(404, "NOT_FOUND", f"No such {kind} in this org.", ctx.request_id)
    if distortion is not None:
        body = _distorted(request, state, kind, body, distortion)
    raw = orjson.dumps(body)
    if kind not in state.etag_kinds:
        return web.Response(body=raw, content_type=JSON)
    etag = etag_of(raw)
    # A distorted answer ignores If-None-Match, so the fault shows even to a revalidating client.
    if distortion is None and etag_matches(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers={"ETag": etag})
    return web.Response(body=raw, content_type=JSON, headers={"ETag": etag})


def _whoami(auth: Identity) -> dict[str, Any]:
    acting_for_child = auth.org != auth.spec.org
    return {
        "organizationId": auth.org,
        "organizationName": f"Simulated {auth.org}",
        "scopes": list(auth.spec.scopes),
        "rateLimitTier": "standard",
        "apiKeyId": auth.key_id,
        "parentOrganizationId": auth.spec.org if acting_for_child else None,
    }


def _rate_limited(state: SimulatorState, request_id: str, retry_after_s: int) -> web.Response:
    if state.retry_after_format == "http-date":
        when = datetime.fromtimestamp(state.wall_clock() + retry_after_s, UTC)
        retry_after = format_datetime(when, usegmt=True)
    else:
        retry_after = str(retry_after_s)
    return error_response(
        429,
        "RATE_LIMITED",
        "Read budget exhausted for this key.",
        request_id,
        details={"retryAfterSeconds": retry_after_s},
        headers={"Retry-After": retry_after},
    )


async def _misbehave(
    request: web.Request, state: SimulatorState, ctx: ApiContext, rule: FaultRule
) -> web.Response:
    if rule.kind == "status":
        return error_response(rule.status, rule.error_code, "Simulated fault.", ctx.request_id)
    if rule.kind == "rate_limit":
        limit = state.peek_budget(ctx.presented_key).limit
        ctx.budget = BudgetDecision(False, limit, 0, rule.retry_after_s, rule.retry_after_s)
        return _rate_limited(state, ctx.request_id, rule.retry_after_s)
    if rule.kind == "garbage":
        # Labelled JSON on purpose, so clients must survive a parse failure, not a type check.
        return web.Response(body=GARBAGE_BODY, content_type=JSON)
    if rule.kind == "reset":
        reset_connection(request)
        ctx.answered = False
        return web.Response(status=500)
    if rule.kind == "stall":
        await stall(request, state)
        ctx.answered = False
        return web.Response(status=500)  # never sent: the connection is closed
    still_connected = await hang(request, state)
    ctx.answered = still_connected
    return error_response(503, "UNAVAILABLE", "Released from a hang.", ctx.request_id)
