"""The ``text/event-stream`` response: its head goes out from the handler, its body after.

aiohttp ends every response by awaiting its ``write_eof`` once the handler has returned. An
``EventStream`` runs its ``StreamSession`` there, so an open stream keeps no handler frame alive:
the edge, the router and the stream handler have all returned, and what an idle stream holds is
aiohttp's own request frames, this one and the session (``python -m bench stream_memory``
measures it against a bare aiohttp SSE handler). The response is also the session's ``Sink``.

The edge sees an ``EventStream`` come back and hands it its end-of-request hook
(``call_when_done``): the connection stays busy until the body has ended.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import hdrs, web

from proxy.streaming import Outcome, StreamSession
from proxy.tenancy.limit_state import StreamHold
from proxy.web import keys
from proxy.web.metrics_routes import count_response

# Small buffers make a reader that stopped reading visible as a blocked write quickly; events
# are a few hundred bytes, so a reading client never comes near them.
_SEND_BUFFER_BYTES = 16 * 1024

Done = Callable[[web.BaseRequest], None]


class _LastChunk:
    """The last frame, chunk-framed: a fan-out hands every stream the same frame object in a
    row, so the framing (a copy of the frame) is done once per fan-out, not once per stream."""

    __slots__ = ("chunk", "frame")

    def __init__(self) -> None:
        self.frame = self.chunk = b""  # an empty frame frames as nothing (never as the end)

    def __call__(self, data: bytes) -> bytes:
        if data is not self.frame:
            self.chunk = b"%x\r\n%b\r\n" % (len(data), data) if data else b""
            self.frame = data
        return self.chunk


frame_chunk = _LastChunk()  # also the fan-out benchmark's framing


class EventStream(web.StreamResponse):
    """One stream's response and the sink its session writes to.

    ``send_now`` is the fan-out fast path, run inside the cache's notify: with nothing queued on
    the socket it writes the frame to the transport at once, framed as the response's own
    ``Transfer-Encoding`` header says, so order with ``send``'s writes is kept.
    """

    # Slots, not the instance dict, for what a fan-out reads once per stream (and less memory).
    __slots__ = (
        "_direct",
        "_done",
        "_framed",
        "_hold",
        "_on_close",
        "_request",
        "_session",
        "_timeout_s",
        "_transport",
    )

    def __init__(
        self,
        request: web.Request,
        session: StreamSession,
        hold: StreamHold,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(
            status=200,
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                "X-Request-Id": keys.request_id(request) or "",
            },
        )
        self._request = request
        self._session: StreamSession | None = session
        self._hold = hold
        self._on_close = on_close  # e.g. a project feed's unsubscribe
        self._done: Done | None = None
        self._transport = request.transport
        self._timeout_s = request.app[keys.SETTINGS].sse_write_timeout_s
        self._direct = False  # only after the first write: aiohttp holds the headers till then
        self._framed = False

    async def open(self) -> None:
        """Send the head (status and headers); the session's first frame follows in the body."""
        await self.prepare(self._request)
        count_response(self._request, self)
        te = self.headers.get(hdrs.TRANSFER_ENCODING, "")
        self._framed = te.lower() == "chunked"
        # The head is serialised: its header entries (about 0.95 KB) would idle with the stream.
        self.headers.clear()
        _tune_socket(self._transport, self._timeout_s)

    def call_when_done(self, done: Done) -> None:
        """Call ``done(request)`` when the body has ended (the edge's end-of-request hook)."""
        self._done = done

    def write_eof(self, data: bytes = b"") -> Coroutine[Any, Any, Any]:
        """The body: the session's ``run``, which ends the response in ``end``.

        It returns ``run``'s coroutine rather than awaiting it, so no frame of this method
        stays alive for the stream's life either.
        """
        session, self._session = self._session, None
        if session is None:
            return super().write_eof(data)
        return session.run(self)

    async def release(self) -> None:
        """Give back what the stream holds without running it (its head could not be sent)."""
        self._session = None
        await self._ended()

    async def _ended(self) -> None:
        try:
            if self._on_close is not None:
                self._on_close()
                self._on_close = None
            await self._hold.release()
        finally:
            done, self._done = self._done, None
            if done is not None:
                done(self._request)

    # -- the session's sink --------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        """Write; a write that could block (client behind on reading) gets the write timeout."""
        transport = self._transport
        if transport is not None and transport.get_write_buffer_size() + len(data) < (
            _SEND_BUFFER_BYTES
        ):
            # Below the high-water mark aiohttp writes without waiting: no timer needed.
            await self.write(data)
        else:
            async with asyncio.timeout(self._timeout_s):
                await self.write(data)
        if not self._direct:
            self._direct = not self.compression

    def send_now(self, data: bytes) -> bool:
        """Write at once when the socket has nothing queued; False leaves it to ``send``."""
        transport = self._transport
        if not self._direct or transport is None or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > 0:
            return False
        transport.write(frame_chunk(data) if self._framed else data)
        return True

    def abort(self) -> None:
        """Drop the connection (the final frame could not be written in time)."""
        if self._transport is not None:
            self._transport.abort()

    async def end(self, outcome: Outcome | None) -> None:
        """The session is over: release what it held, then end the response."""
        await self._ended()
        if outcome is None:
            return  # cancelled: the client is gone
        if outcome is Outcome.FAILED:
            self.force_close()  # the session logged why; an unfinished chunked body says it
            self.abort()
            return
        if outcome is Outcome.SHUTDOWN:
            self.force_close()  # the client reconnects, to another replica
        await super().write_eof()


async def open_stream(
    request: web.Request,
    session: StreamSession,
    hold: StreamHold,
    on_close: Callable[[], None] | None = None,
) -> EventStream:
    """The stream's response with its head sent; aiohttp runs ``session`` as its body.

    From here the response owns ``hold`` and ``on_close``: it releases them when the body
    ends, or now if the head cannot be sent.
    """
    response = EventStream(request, session, hold, on_close)
    try:
        await response.open()
    except BaseException:
        await response.release()
        raise
    return response


def _tune_socket(transport: asyncio.Transport | None, write_timeout_s: float) -> None:
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
