"""Batch progress for list pages: ``GET /v1/content/progress?ids=a,b,c``.

Items come back in the order asked: each the container's progress body exactly, or
``{"containerId", "error"}`` in the envelope shape. Cold ids are fetched through the same
single-flight as single polls, so a batch never costs more upstream calls than its ids one by one.
"""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from proxy.errors import InvalidRequest, ProxyError, error_object
from proxy.request_ids import next_request_id
from proxy.resources import PROGRESS, ResourceRef
from proxy.services.watching import Watching
from proxy.snapshot import Snapshot, etag_for
from proxy.web import keys
from proxy.web.admission import admit_watchers
from proxy.web.handlers import servable
from proxy.web.headers import etag_matches
from proxy.web.streams import parse_id_list


def _error_item(raw_id: str, exc: ProxyError) -> bytes:
    return orjson.dumps(
        {
            "containerId": raw_id,
            "error": error_object(exc.code, exc.message, next_request_id(), exc.details),
        }
    )


async def get_progress_batch(request: web.Request) -> web.StreamResponse:
    """Many containers' progress in one request."""
    app = request.app
    settings, watching = app[keys.SETTINGS], app[keys.WATCHING]
    raw = request.query.get("ids")
    if raw is None:
        raise InvalidRequest("Name the containers: ?ids=id1,id2,... (at most 100).")
    ids = parse_id_list(raw, PROGRESS, settings.max_stream_ids)
    if not ids:
        raise InvalidRequest("Name at least one container id in ?ids=.")
    caller = app[keys.ACCESS].caller(request)
    refs = await admit_watchers(request, caller, [(PROGRESS, i) for i in ids], item_errors=True)
    items = await collect_items(watching, caller.tenant_id, list(zip(ids, refs, strict=True)))
    return items_response(request, b'{"items":[' + b",".join(items) + b"]}")


async def collect_items(
    watching: Watching, tenant: str, wanted: list[tuple[str, ResourceRef | ProxyError]]
) -> list[bytes]:
    """Each container's progress body, or its error item, in the order asked (fetched together)."""

    async def one(ref: ResourceRef) -> Snapshot:
        snap, _ = await watching.snapshot(ref, tenant)
        return servable(snap, ref)

    results = await asyncio.gather(
        *(one(r) for _, r in wanted if isinstance(r, ResourceRef)), return_exceptions=True
    )
    parts: list[bytes] = []
    fetched = iter(results)
    for raw_id, item in wanted:
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
    return parts


def items_response(request: web.Request, body: bytes) -> web.Response:
    """A JSON answer with an ETag of its bytes; 304 when the client has it."""
    etag = etag_for(body)
    headers = {
        "ETag": etag,
        "Cache-Control": "no-cache",
        "X-Request-Id": keys.request_id(request) or "",
    }
    if etag_matches(request.headers.get("If-None-Match"), etag):
        request.app[keys.STATS].not_modified += 1
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/json", headers=headers)
