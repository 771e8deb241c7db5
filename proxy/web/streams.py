"""Push over HTTP: SSE streams of one resource or many (the fan-out itself is proxy.streaming).

This module parses the request, checks access, fetches each resource's first snapshot (cold,
single-flight, if needed), answers 204 to a reconnect that already has every terminal state,
prepares the ``text/event-stream`` response and hands a ``StreamSession`` a sink that writes to
it. A token past its exp opens no stream (401); an open one ends at exp with TOKEN_EXPIRED.
"""

from __future__ import annotations

import asyncio
import socket

from aiohttp import hdrs, web

from proxy.errors import InvalidRequest, ProxyError, Unauthenticated
from proxy.request_ids import next_request_id
from proxy.resources import JOB, PROGRESS, ResourceKind, ResourceRef
from proxy.snapshot import Snapshot
from proxy.streaming import SHUTDOWN_RETRY_MS, Outcome, StreamSession
from proxy.streaming.sse import parse_vector_id
from proxy.tenancy.access import Caller
from proxy.web import keys
from proxy.web.admission import admit_watchers
from proxy.web.handlers import servable
from proxy.web.headers import parse_event_id
from proxy.web.metrics_routes import count_response

__all__ = [
    "SHUTDOWN_RETRY_MS",
    "ResponseSink",
    "first_states",
    "new_session",
    "parse_id_list",
    "prepare_stream",
    "serve_session",
    "stream",
    "stream_caller",
]

# Small buffers make a reader that stopped reading visible as a blocked write quickly; events
# are a few hundred bytes, so a reading client never comes near them.
_SEND_BUFFER_BYTES = 16 * 1024


class ResponseSink:
    """A session's bytes onto one prepared response (HTTP/1.1 chunks when the response says so).

    ``send_now`` is the fan-out fast path, run inside the cache's notify: with nothing queued on
    the socket it writes the frame to the transport at once, framed as the response's own
    ``Transfer-Encoding`` header says, so order with ``send``'s writes is kept.
    """

    __slots__ = ("_chunked", "_direct", "_response", "_timeout_s", "_transport")

    def __init__(
        self, request: web.Request, response: web.StreamResponse, timeout_s: float
    ) -> None:
        self._transport = request.transport
        self._response = response
        self._timeout_s = timeout_s
        self._direct = False  # only after the first write: aiohttp holds the headers till then
        self._chunked = False

    async def send(self, data: bytes) -> None:
        """Write; a write that could block (client behind on reading) gets the write timeout."""
        transport = self._transport
        if transport is not None and transport.get_write_buffer_size() + len(data) < (
            _SEND_BUFFER_BYTES
        ):
            # Below the high-water mark aiohttp writes without waiting: no timer needed.
            await self._response.write(data)
        else:
            async with asyncio.timeout(self._timeout_s):
                await self._response.write(data)
        if not self._direct:
            te = self._response.headers.get(hdrs.TRANSFER_ENCODING, "")
            self._chunked = te.lower() == "chunked"
            self._direct = not self._response.compression

    def send_now(self, data: bytes) -> bool:
        """Write at once when the socket has nothing queued; False leaves it to ``send``."""
        transport = self._transport
        if not self._direct or transport is None or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > 0:
            return False
        transport.write(b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data)
        return True

    def abort(self) -> None:
        """Drop the connection (the final frame could not be written in time)."""
        if self._transport is not None:
            self._transport.abort()


def _tune_socket(request: web.Request, write_timeout_s: float) -> None:
    transport = request.transport
    if transport is None:
        return
    transport.set_write_buffer_limits(high=_SEND_BUFFER_BYTES)
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER_BYTES)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            # A peer that vanished without closing is dropped after the write timeout.
            sock.setsockopt(
                socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(write_timeout_s * 1000)
            )
    except OSError:
        pass


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
        request_id=request[keys.REQUEST_ID],
        new_request_id=next_request_id,
        end_when_done=end_when_done,
    )


async def prepare_stream(request: web.Request) -> tuple[web.StreamResponse, ResponseSink]:
    """Send the event-stream response's head; the sink then takes the session's bytes."""
    timeout_s = request.app[keys.SETTINGS].sse_write_timeout_s
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            "X-Request-Id": request[keys.REQUEST_ID],
        },
    )
    await response.prepare(request)
    count_response(request, response)
    _tune_socket(request, timeout_s)
    return response, ResponseSink(request, response, timeout_s)


async def serve_session(request: web.Request, session: StreamSession) -> web.StreamResponse:
    """Prepare the event-stream response and run ``session`` on it until the stream ends."""
    response, sink = await prepare_stream(request)
    if await session.run(sink) is Outcome.SHUTDOWN:
        response.force_close()  # the client reconnects, to another replica
    return response


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

    One coroutine for the whole life of the stream: an idle stream keeps every frame between
    its connection and its wait alive, so the steps before the wait return first.
    """
    caller = stream_caller(request)
    refs, single = await _permitted(request, caller)
    async with request.app[keys.LIMITS].stream(caller, refs):
        opened = await _open_session(request, refs, caller, single=single)
        if isinstance(opened, web.StreamResponse):
            return opened
        response, sink = await prepare_stream(request)
        if await opened.run(sink) is Outcome.SHUTDOWN:
            response.force_close()  # the client reconnects, to another replica
        return response


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
    last_id = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
    if single:
        version = parse_event_id(last_id)
        session.resume(None if version is None else [version])
    else:
        session.resume(parse_vector_id(last_id, len(refs)))
    if session.finished:
        return web.Response(status=204, headers={"X-Request-Id": request[keys.REQUEST_ID]})
    return session
