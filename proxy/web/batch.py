"""Batch progress for list pages: ``GET /v1/content/progress?ids=a,b,c``.

Items come back in the order asked: each the container's progress body exactly, or
``{"containerId", "error"}`` in the envelope shape. Cold ids are fetched through the same
single-flight as single polls, so a batch never costs more upstream calls than its ids one by one.
"""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from proxy.errors import InvalidRequest, ProxyError
from proxy.resources import PROGRESS, ResourceRef
from proxy.snapshot import Snapshot, etag_for
from proxy.web import keys
from proxy.web.handlers import servable
from proxy.web.headers import etag_matches
from proxy.web.request_ids import next_request_id
from proxy.web.streams import parse_id_list


def _error_item(raw_id: str, exc: ProxyError) -> bytes:
    return orjson.dumps(
        {
            "containerId": raw_id,
            "error": {
                "code": exc.code,
                "message": exc.message,
                "requestId": next_request_id(),
                "details": exc.details,
            },
        }
    )


async def get_progress_batch(request: web.Request) -> web.StreamResponse:
    """Many containers' progress in one request."""
    app = request.app
    settings, watching, stats = app[keys.SETTINGS], app[keys.WATCHING], app[keys.STATS]
    access, limits = app[keys.ACCESS], app[keys.LIMITS]
    raw = request.query.get("ids")
    if raw is None:
        raise InvalidRequest("Name the containers: ?ids=id1,id2,... (at most 100).")
    ids = parse_id_list(raw, PROGRESS, settings.max_stream_ids)
    if not ids:
        raise InvalidRequest("Name at least one container id in ?ids=.")
    caller = access.caller(request)
    await limits.admit(caller)
    stats.client_requests += 1
    stats.tenant_requests[caller.tenant_id] += 1

    refs: list[ResourceRef | ProxyError] = []
    for raw_id in ids:
        try:
            ref = access.resource(caller, PROGRESS, raw_id)
            limits.watch(caller, ref)
            refs.append(ref)
        except ProxyError as exc:
            refs.append(exc)

    async def one(ref: ResourceRef) -> Snapshot:
        snap, _ = await watching.snapshot(ref, caller.tenant_id)
        return servable(snap, ref)

    results = await asyncio.gather(
        *(one(r) for r in refs if isinstance(r, ResourceRef)), return_exceptions=True
    )
    parts: list[bytes] = []
    fetched = iter(results)
    for raw_id, item in zip(ids, refs, strict=True):
        if isinstance(item, ProxyError):
            parts.append(_error_item(raw_id, item))
            continue
        res = next(fetched)
        if isinstance(res, ProxyError):
            parts.append(_error_item(item.id, res))
        elif isinstance(res, BaseException):
            raise res
        else:
            parts.append(res.body)
    body = b'{"items":[' + b",".join(parts) + b"]}"
    etag = etag_for(body)
    headers = {
        "ETag": etag,
        "Cache-Control": "no-cache",
        "X-Request-Id": request[keys.REQUEST_ID],
    }
    if etag_matches(request.headers.get("If-None-Match"), etag):
        stats.not_modified += 1
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/json", headers=headers)
