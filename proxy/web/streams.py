"""Push: SSE streams of one resource or many, latest state wins per client.

On connect a stream sends the current snapshot at once (fetched cold, single-flight, if needed),
then one event per new version. Per client the only state is "which keys changed since I last
wrote", so a slow reader skips intermediate states instead of growing a queue. After the terminal
snapshot the stream ends; a reconnect that already has it gets 204, which stops EventSource.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from aiohttp import web

from proxy.errors import InvalidRequest, ProxyError
from proxy.resources import JOB, PROGRESS, ResourceKind, ResourceRef
from proxy.snapshot import Snapshot
from proxy.web import keys
from proxy.web.handlers import servable
from proxy.web.request_ids import next_request_id
from proxy.web.sse import (
    HEARTBEAT,
    event_frame,
    parse_vector_id,
    retry_frame,
    vector_id,
    with_last_error,
)

log = structlog.get_logger("proxy.streams")

# Small buffers make a reader that stopped reading visible as a blocked write quickly; events
# are a few hundred bytes, so a reading client never comes near them.
_SEND_BUFFER_BYTES = 16 * 1024


@dataclass(eq=False)
class _StreamListener:
    """Collects changed keys for one stream (the cache calls ``notify``)."""

    changed: set[str] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    last_write: float = 0.0  # loop time of the last write (the heartbeat ticker reads it)
    heartbeat_due: bool = False
    # Writes the new snapshot straight to the socket when it can (True), else the task does it.
    direct: Callable[[str], bool] | None = None

    def notify(self, key: str) -> None:
        if self.direct is not None and not self.changed and self.direct(key):
            return
        self.changed.add(key)
        self.wake.set()


class StreamHub:
    """Every open stream on this replica, and one ticker that asks idle ones for a heartbeat.

    One shared ticker instead of a timer per stream per wait: with 10,000 streams, creating and
    cancelling a timer on every event was most of the cost of a fan-out.
    """

    def __init__(self, heartbeat_s: float) -> None:
        self.heartbeat_s = heartbeat_s
        self.listeners: set[_StreamListener] = set()

    async def run(self) -> None:
        """Wake streams that have been quiet for a heartbeat interval (cancel to stop)."""
        loop = asyncio.get_running_loop()
        tick_s = min(1.0, self.heartbeat_s / 2)
        while True:
            await asyncio.sleep(tick_s)
            due = loop.time() - self.heartbeat_s
            for listener in self.listeners:
                if listener.last_write <= due:
                    listener.heartbeat_due = True
                    listener.wake.set()


# One rendered frame per (resource, version) for single-resource streams: every subscriber of a
# resource gets the same bytes, so render them once. Bounded by clearing.
_FRAMES: dict[tuple[str, int], bytes] = {}
_FRAMES_MAX = 10_000


@dataclass
class _Slot:
    ref: ResourceRef
    sent_version: int = 0
    done: bool = False  # terminal (or gone) and already sent


def _event_bytes(ref: ResourceRef, snap: Snapshot, event_id: str) -> bytes:
    body = snap.body
    if snap.extra and snap.status == "failed":
        body = with_last_error(body, snap.extra)
    return event_frame(ref.kind.event, event_id, body)


def _error_event(ref: ResourceRef, exc: ProxyError) -> bytes:
    import orjson

    data = orjson.dumps(
        {
            ref.kind.id_field: ref.id,
            "error": {
                "code": exc.code,
                "message": exc.message,
                "requestId": next_request_id(),
                "details": exc.details,
            },
        }
    )
    return b"event: error\ndata: " + data + b"\n\n"


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


async def stream_progress(request: web.Request) -> web.StreamResponse:
    """GET /v1/content/{containerId}/progress/stream."""
    return await _stream(request, [(PROGRESS, request.match_info["containerId"])], single=True)


async def stream_job(request: web.Request) -> web.StreamResponse:
    """GET /v1/jobs/{jobId}/stream."""
    return await _stream(request, [(JOB, request.match_info["jobId"])], single=True)


async def stream_many(request: web.Request) -> web.StreamResponse:
    """GET /v1/stream?containers=a,b&jobs=c: one stream for a list page."""
    limit = request.app[keys.SETTINGS].max_stream_ids
    wanted = [
        (PROGRESS, i) for i in parse_id_list(request.query.get("containers", ""), PROGRESS, limit)
    ]
    wanted += [(JOB, i) for i in parse_id_list(request.query.get("jobs", ""), JOB, limit)]
    if not wanted:
        raise InvalidRequest("Name at least one id: ?containers=id1,id2 and/or ?jobs=id3.")
    if len(wanted) > limit:
        raise InvalidRequest(f"At most {limit} ids per stream.", details={"count": len(wanted)})
    return await _stream(request, wanted, single=False)


async def _stream(
    request: web.Request, wanted: list[tuple[ResourceKind, str]], *, single: bool
) -> web.StreamResponse:
    access, limits = request.app[keys.ACCESS], request.app[keys.LIMITS]
    caller = access.caller(request)
    refs: list[ResourceRef] = []
    for kind, raw in wanted:
        ref = access.resource(caller, kind, raw)
        if ref not in refs:
            refs.append(ref)
    await limits.admit(caller)
    for ref in refs:
        limits.watch(caller, ref)
    async with limits.stream(caller, refs):
        return await _run_stream(request, refs, single=single, caller_tenant=caller.tenant_id)


async def _run_stream(
    request: web.Request, refs: list[ResourceRef], *, single: bool, caller_tenant: str
) -> web.StreamResponse:
    app = request.app
    settings, watching, stats = app[keys.SETTINGS], app[keys.WATCHING], app[keys.STATS]
    stats.client_requests += 1
    stats.tenant_requests[caller_tenant] += 1
    slots = [_Slot(ref) for ref in refs]
    last_id = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")

    # The first snapshot of every resource, cold-fetched together.
    results = await asyncio.gather(
        *(watching.snapshot(ref, caller_tenant) for ref in refs), return_exceptions=True
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
    if single:
        only = first[0]
        if isinstance(only, ProxyError):
            if only.status < 500:
                raise only  # not found or refused: a plain error envelope, nothing to stream
            # Upstream trouble is transient: open the stream, say so, and wait for data.
        elif only.terminal and last_id is not None and last_id.strip() == str(only.version):
            return web.Response(status=204, headers={"X-Request-Id": request[keys.REQUEST_ID]})
        elif last_id is not None and last_id.strip() == str(only.version):
            slots[0].sent_version = only.version
    else:
        known = parse_vector_id(last_id, len(slots))
        if known is not None:
            for slot, snap, version in zip(slots, first, known, strict=True):
                if isinstance(snap, Snapshot) and snap.version == version:
                    slot.sent_version = version
                    slot.done = snap.terminal
            if all(slot.done for slot in slots):
                return web.Response(status=204, headers={"X-Request-Id": request[keys.REQUEST_ID]})

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
    _tune_socket(request, settings.sse_write_timeout_s)
    listener = _StreamListener()
    by_key = {slot.ref.key: slot for slot in slots}

    def direct(key: str) -> bool:
        # The fan-out fast path, run inside the cache's notify (no task switch per subscriber).
        # Only when the socket has nothing queued, so order with the task's writes is kept.
        transport = request.transport
        slot = by_key.get(key)
        if slot is None or transport is None or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > 0 or slot.done:
            return False
        snap = watching.cache.get(key)
        if snap is None or not snap.has_body or snap.status_code != 200:
            return False  # errors and 404s take the task's path
        if snap.version <= slot.sent_version:
            return True
        frame = _render(slot, snap, slots, single)
        # aiohttp chunks HTTP/1.1 streams; frame the bytes the way its writer would.
        transport.write(b"%x\r\n%b\r\n" % (len(frame), frame) if chunked else frame)
        stats.stream_events += 1
        listener.last_write = loop.time()
        if all(s.done for s in slots):
            listener.wake.set()  # the task ends the stream
        return True

    hub = app[keys.STREAM_HUB]
    for slot in slots:
        watching.cache.listen(slot.ref.key, listener)
        watching.interest.hold(slot.ref, caller_tenant)
    stats.streams_open += 1
    hub.listeners.add(listener)
    loop = asyncio.get_running_loop()
    timeout_s = settings.sse_write_timeout_s
    try:
        pending = bytearray(retry_frame(settings.sse_retry_ms))
        for slot, snap in zip(slots, first, strict=True):
            if isinstance(snap, ProxyError):
                pending += _error_event(slot.ref, snap)
                # 4xx is final for this resource; upstream 5xx may heal, so keep watching.
                slot.done = snap.status < 500
            elif not slot.done:
                pending += _render(slot, snap, slots, single)
        await _write(request, response, bytes(pending), timeout_s)
        stats.stream_events += len(slots)
        listener.last_write = loop.time()
        # Only after the first write: aiohttp may hold the headers back until then.
        chunked = bool(getattr(getattr(response, "_payload_writer", None), "chunked", False))
        listener.direct = direct
        while not all(slot.done for slot in slots):
            await listener.wake.wait()
            listener.wake.clear()
            if listener.heartbeat_due and not listener.changed:
                listener.heartbeat_due = False
                await _write(request, response, HEARTBEAT, timeout_s)
                listener.last_write = loop.time()
                continue
            listener.heartbeat_due = False
            changed, listener.changed = listener.changed, set()
            out = bytearray()
            for slot in slots:
                if slot.done or slot.ref.key not in changed:
                    continue
                current = watching.cache.get(slot.ref.key)
                if current is None or current.version <= slot.sent_version:
                    continue
                if not current.has_body or current.status_code == 404:
                    if current.status_code == 404:
                        out += _error_event(
                            slot.ref, ProxyError("The resource was not found.", status=404)
                        )
                        slot.done = True
                    continue
                out += _render(slot, current, slots, single)
                stats.stream_events += 1
            if out:
                await _write(request, response, bytes(out), timeout_s)
                listener.last_write = loop.time()
    except (ConnectionError, TimeoutError, asyncio.CancelledError) as exc:
        # The client left or stopped reading; release everything below.
        log.debug("stream_closed", reason=type(exc).__name__)
        if isinstance(exc, asyncio.CancelledError):
            raise
    finally:
        listener.direct = None
        hub.listeners.discard(listener)
        stats.streams_open -= 1
        for slot in slots:
            watching.cache.unlisten(slot.ref.key, listener)
            watching.interest.unhold(slot.ref, caller_tenant)
    return response


def _render(slot: _Slot, snap: Snapshot, slots: list[_Slot], single: bool) -> bytes:
    slot.sent_version = snap.version
    slot.done = snap.terminal
    if not single:
        return _event_bytes(slot.ref, snap, vector_id([s.sent_version for s in slots]))
    frame = _FRAMES.get((snap.key, snap.version))
    if frame is None:
        frame = _event_bytes(slot.ref, snap, str(snap.version))
        if len(_FRAMES) >= _FRAMES_MAX:
            _FRAMES.clear()
        _FRAMES[(snap.key, snap.version)] = frame
    return frame


async def _write(
    request: web.Request, response: web.StreamResponse, data: bytes, timeout_s: float
) -> None:
    """Write; a write that could block (client behind on reading) gets the write timeout."""
    transport = request.transport
    if transport is not None and transport.get_write_buffer_size() + len(data) < (
        _SEND_BUFFER_BYTES
    ):
        # Below the high-water mark aiohttp writes without waiting: no timer needed.
        await response.write(data)
        return
    async with asyncio.timeout(timeout_s):
        await response.write(data)
