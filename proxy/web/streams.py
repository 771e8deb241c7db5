"""Push over HTTP: SSE streams of one resource or many (the fan-out itself is proxy.streaming).

This module parses the request, checks access, fetches each resource's first snapshot (cold,
single-flight, if needed), answers 204 to a reconnect that already has every terminal state,
and returns an ``EventStream`` whose body is the ``StreamSession`` (``proxy.web.event_stream``).
A token past its exp opens no stream (401); an open one ends at exp with TOKEN_EXPIRED.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from proxy.errors import InvalidRequest, ProxyError, Unauthenticated
from proxy.request_ids import next_request_id
from proxy.resources import JOB, PROGRESS, ResourceKind, ResourceRef
from proxy.snapshot import Snapshot
from proxy.streaming import StreamSession
from proxy.streaming.sse import parse_vector_id
from proxy.tenancy.access import Caller
from proxy.web import keys
from proxy.web.admission import admit_watchers
from proxy.web.event_stream import open_stream
from proxy.web.handlers import servable
from proxy.web.headers import parse_event_id

__all__ = ["first_states", "new_session", "parse_id_list", "stream", "stream_caller"]


def parse_id_list(raw: str, kind: ResourceKind, limit: int) -> list[str]:
    """Comma-separated ids from a query parameter (empty items ignored)."""
    ids = [item.strip() for item in raw.split(",") if item.strip()]
    if len(ids) > limit:
        raise InvalidRequest(
            f"At most {limit} ids per stream.", details={"field": kind.name, "count": len(ids)}
        )
    return ids


def stream_caller(request: web.Request) -> Caller:
    """The caller of a stream request; 401 also for a token already past its exp.

    The clock-skew leeway lets a just-expired token still read a poll, but a stream opened with
    it would have to end before its first event: refusing it stops EventSource's reconnects.
    """
    app = request.app
    caller = app[keys.ACCESS].caller(request)
    grant = caller.grant
    if grant is not None and grant.expires_at <= app[keys.STREAM_HUB].wall():
        raise Unauthenticated("The capability token is invalid or expired.")
    return caller


def new_session(
    request: web.Request, caller: Caller, *, single: bool, end_when_done: bool = True
) -> StreamSession:
    """A session for ``caller``'s stream (add resources, then ``serve_session``)."""
    app = request.app
    return StreamSession(
        app[keys.WATCHING],
        app[keys.STREAM_HUB],
        app[keys.STATS],
        tenant=caller.tenant_id,
        single=single,
        expires_at=caller.grant.expires_at if caller.grant is not None else None,
        retry_ms=app[keys.SETTINGS].sse_retry_ms,
        request_id=keys.request_id(request) or "",
        new_request_id=next_request_id,
        end_when_done=end_when_done,
    )


def _wanted(request: web.Request) -> tuple[list[tuple[ResourceKind, str]], bool]:
    """The resources a stream request names, and whether it is a single-resource stream."""
    info = request.match_info
    if "containerId" in info:
        return [(PROGRESS, info["containerId"])], True
    if "jobId" in info:
        return [(JOB, info["jobId"])], True
    limit = request.app[keys.SETTINGS].max_stream_ids
    query = request.query
    wanted = [(PROGRESS, i) for i in parse_id_list(query.get("containers", ""), PROGRESS, limit)]
    wanted += [(JOB, i) for i in parse_id_list(query.get("jobs", ""), JOB, limit)]
    if not wanted:
        raise InvalidRequest("Name at least one id: ?containers=id1,id2 and/or ?jobs=id3.")
    if len(wanted) > limit:
        raise InvalidRequest(f"At most {limit} ids per stream.", details={"count": len(wanted)})
    return wanted, False


async def stream(request: web.Request) -> web.StreamResponse:
    """GET /v1/content/{containerId}/progress/stream, /v1/jobs/{jobId}/stream, and
    /v1/stream?containers=a,b&jobs=c (one stream for a list page).

    The handler returns once the head is sent: the stream's body is the ``EventStream``'s,
    run by aiohttp after the handler, so an open stream keeps none of the frames that led here.
    """
    caller = stream_caller(request)
    refs, single = await _permitted(request, caller)
    hold = request.app[keys.LIMITS].stream(caller, refs)
    await hold.take()
    try:
        opened = await _open_session(request, refs, caller, single=single)
    except BaseException:
        await hold.release()
        raise
    if isinstance(opened, web.StreamResponse):
        await hold.release()
        return opened
    return await open_stream(request, opened, hold)


async def _permitted(request: web.Request, caller: Caller) -> tuple[list[ResourceRef], bool]:
    """The stream's resources (each once) once access, ownership and the limits allow them."""
    wanted, single = _wanted(request)
    refs: list[ResourceRef] = []
    for ref in await admit_watchers(request, caller, wanted):
        assert isinstance(ref, ResourceRef)  # without item_errors a refusal raises
        if ref not in refs:
            refs.append(ref)
    return refs, single


async def first_states(
    request: web.Request, refs: list[ResourceRef], tenant: str
) -> list[Snapshot | ProxyError]:
    """Every resource's current snapshot (cold-fetched together), or why there is none."""
    watching = request.app[keys.WATCHING]
    results = await asyncio.gather(
        *(watching.snapshot(ref, tenant) for ref in refs), return_exceptions=True
    )
    first: list[Snapshot | ProxyError] = []
    for ref, res in zip(refs, results, strict=True):
        if isinstance(res, ProxyError):
            first.append(res)
        elif isinstance(res, BaseException):
            raise res
        else:
            try:
                first.append(servable(res[0], ref))
            except ProxyError as exc:
                first.append(exc)
    return first


async def _open_session(
    request: web.Request, refs: list[ResourceRef], caller: Caller, *, single: bool
) -> StreamSession | web.StreamResponse:
    """The session with every first state, resumed from Last-Event-ID; a 204 when it has all."""
    first = await first_states(request, refs, caller.tenant_id)
    if single and isinstance(first[0], ProxyError) and first[0].status < 500:
        raise first[0]  # not found or refused: a plain error envelope, nothing to stream
    # Upstream trouble (5xx) is transient: open the stream, say so, and wait for data.
    session = new_session(request, caller, single=single)
    for ref, state in zip(refs, first, strict=True):
        session.add(ref, state)
    last_id = request.headers.get("Last-Event-ID")
    if not last_id and request.query_string:  # parsed only if there is one: it is kept
        last_id = request.query.get("lastEventId")
    if single:
        version = parse_event_id(last_id)
        session.resume(None if version is None else [version])
    else:
        session.resume(parse_vector_id(last_id, len(refs)))
    if session.finished:
        return web.Response(status=204, headers={"X-Request-Id": keys.request_id(request) or ""})
    return session
