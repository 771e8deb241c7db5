"""The connection's protocol: aiohttp's request handler with the edge's own rules.

``EdgeProtocol`` is aiohttp's public ``web.RequestHandler`` with what aiohttp lacks: a
header-read timeout (a connection must finish each request head within ``header_timeout_s`` of
its first byte, or of connecting), an idle keep-alive timeout that knows about the fast path,
parser errors answered in the error envelope and logged once per kind instead of as one
traceback per bad request, and the fast path itself: a connection with nothing in flight whose
read is one whole simple GET of a cached poll is answered from its bytes (``FastPolls``), before
aiohttp builds a request.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from proxy.errors import envelope
from proxy.logs import innermost_frame, summary
from proxy.request_ids import next_request_id
from proxy.web.fast_polls import FastPolls
from proxy.web.responses import error_response

log = structlog.get_logger("proxy.server")

# The HTTP parser's own limits sit well above ours, so oversized URLs and headers reach the edge
# and get a 414/431 in the error envelope instead of the parser's bare 400.
PARSER_MAX_LINE = 65536
PARSER_MAX_FIELD = 65536

# Requests of these methods are taken to have no body without looking (every request of the
# API is a GET). Should one carry a body anyway, its bytes look like the start of a next head,
# and the worst case is that connection closing at the header timeout instead of keep-alive's.
_BODILESS = (b"GET ", b"HEAD ", b"OPTIONS ")
# What follows "content-length" in a head that announces a non-empty body.
_NONZERO_LENGTH = re.compile(rb"[ \t]*:[ \t]*0*[1-9]")
# Heads are buffered up to this for the body check; a longer one is refused by the parser anyway.
_MAX_TRACKED_HEAD = 256 * 1024


class HeadTracker:
    """Where a connection's request heads begin and end, from its raw bytes (pure).

    ``started`` is the time the current unfinished head began (None between requests). Tracking
    stops for good after a head that announces a body (the API's requests have none; keep-alive
    and aiohttp's own limits bound the rest of such a connection) or when the parser saw more
    requests than this did (``dispatched``), so it can never time out a request being served.
    ``busy`` counts requests being handled: a pipelined head waiting behind one is not slow.
    """

    __slots__ = ("_buffer", "_overflow", "busy", "dispatched", "heads", "started", "tracking")

    def __init__(self, now: float) -> None:
        self.started: float | None = now  # connected but silent counts as an unfinished head
        self.tracking = True
        self.heads = 0
        self.dispatched = 0
        self.busy = 0
        self._buffer = b""
        self._overflow = False

    def feed(self, data: bytes, clock: Callable[[], float] = time.monotonic) -> None:
        """Account for ``data``, received now by ``clock``."""
        if not self.tracking or not data:
            return
        buf = self._buffer + data if self._buffer else data
        start = max(0, len(self._buffer) - 3)  # a head end may straddle two reads
        pos = 0
        while pos < len(buf):
            end = _head_end(buf, start)
            if end < 0:
                if self.started is None:
                    # This read began the head; the clock is read only here, since a head that
                    # arrives whole (the common case) never needs it.
                    self.started = clock()
                rest = buf[pos:]
                if len(rest) > _MAX_TRACKED_HEAD:
                    self._overflow, rest = True, rest[-3:]
                self._buffer = rest
                return
            self.heads += 1
            if self._overflow or (
                not buf.startswith(_BODILESS, pos) and _announces_body(buf[pos:end])
            ):
                self.stop()
                return
            self.started = None
            pos = start = end
        self._buffer = b""

    def between_requests(self) -> bool:
        """True when every head this connection sent was answered and no part of one waits."""
        return (
            self.tracking and not self.busy and self.heads == self.dispatched and not self._buffer
        )

    def answered(self) -> None:
        """One whole head arrived and was answered without the parser (the fast path)."""
        self.heads += 1
        self.dispatched += 1
        self.started = None

    def on_dispatch(self) -> None:
        """The parser handed a request to the application."""
        self.dispatched += 1
        if self.dispatched > self.heads:
            self.stop()  # the parser read a head this did not see: trust the parser

    def stop(self) -> None:
        """Track this connection no further."""
        self.tracking = False
        self.started = None
        self._buffer = b""


def _head_end(buf: bytes, start: int) -> int:
    """Index just past the blank line that ends a head, or -1.

    CRLF only: aiohttp's parser refuses bare LF line ends, and should one ever pass, the
    dispatch check stops the tracking. One ``bytes.find``: this runs on every read.
    """
    at = buf.find(b"\r\n\r\n", start)
    return at + 4 if at >= 0 else -1


def _announces_body(head: bytes) -> bool:
    """True when ``head`` has Transfer-Encoding or a non-zero Content-Length (any case)."""
    lower = head.lower()
    if b"\ntransfer-encoding" in lower:
        return True
    at = lower.find(b"\ncontent-length")
    while at >= 0:
        if _NONZERO_LENGTH.match(lower, at + 15):
            return True
        at = lower.find(b"\ncontent-length", at + 15)
    return False


class HeadWatch:
    """The connections with an unfinished request head or idle between requests, and the sweep
    that closes those whose head is late or whose keep-alive ran out.

    The keep-alive timeout is kept here, not by aiohttp: a connection whose polls the fast path
    answers looks idle to aiohttp, which would close it in the middle of its use.
    """

    def __init__(self, timeout_s: float, keepalive_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self.keepalive_s = keepalive_s
        self.pending: set[EdgeProtocol] = set()
        # Idle connections by when they became idle, oldest first (re-inserted on each use).
        self.idle: dict[EdgeProtocol, float] = {}

    def on_request(self, request: web.BaseRequest) -> None:
        """Called for every parsed request before it is handled."""
        protocol = request.protocol
        if isinstance(protocol, EdgeProtocol):
            protocol.head.on_dispatch()
            protocol.head.busy += 1
            self.idle.pop(protocol, None)
            if protocol.head.started is None:
                self.pending.discard(protocol)

    def on_done(self, request: web.BaseRequest) -> None:
        """Called when a handler returned: a head waiting behind it gets its full time now."""
        protocol = request.protocol
        if isinstance(protocol, EdgeProtocol):
            head = protocol.head
            head.busy -= 1
            now = time.monotonic()
            if head.started is not None:
                head.started = max(head.started, now)
            elif not head.busy:
                self.idle[protocol] = now

    def forget(self, protocol: EdgeProtocol) -> None:
        """The connection closed."""
        self.pending.discard(protocol)
        self.idle.pop(protocol, None)

    async def run(self) -> None:
        """Close connections whose head is overdue or that idled too long (cancel to stop)."""
        tick_s = min(1.0, self.timeout_s / 4, self.keepalive_s / 2)
        while True:
            await asyncio.sleep(tick_s)
            self.sweep(time.monotonic())

    def sweep(self, now: float) -> None:
        """One pass of ``run``."""
        limit = now - self.timeout_s
        late = [
            p
            for p in self.pending
            if p.head.started is not None and p.head.started <= limit and not p.head.busy
        ]
        for protocol in late:
            self.pending.discard(protocol)
            protocol.head_timed_out()
        if late and summary().admit("header_timeout"):
            log.info("header_timeout", closed=len(late), timeout_s=self.timeout_s)
        idle_limit = now - self.keepalive_s
        expired = []
        for protocol, since in self.idle.items():
            if since > idle_limit:
                break  # the rest became idle later
            expired.append(protocol)
        for protocol in expired:
            del self.idle[protocol]
            if not protocol.head.busy and protocol.head.started is None:
                protocol.force_close()


def _timeout_response() -> bytes:
    rid = next_request_id()
    body = envelope("REQUEST_TIMEOUT", "The request head was not received in time.", rid)
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        f"X-Request-Id: {rid}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class EdgeProtocol(web.RequestHandler):
    """aiohttp's request handler with the edge's timeouts, enveloped parser errors and the
    cached-poll fast path (``fast``; None turns it off)."""

    __slots__ = ("fast", "head", "request_id", "watch")

    def __init__(
        self, manager: web.Server, watch: HeadWatch, fast: FastPolls | None, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self.watch = watch
        self.fast = fast
        self.head = HeadTracker(time.monotonic())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.head.started = time.monotonic()
        self.watch.pending.add(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.watch.forget(self)
        self.head.stop()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        head, watch = self.head, self.watch
        watch.idle.pop(self, None)
        if self.fast is not None and data[:4] == b"GET " and head.between_requests():
            # Nothing of this connection is in aiohttp's hands, so answering here keeps order.
            transport = self.transport
            if (
                transport is not None
                and not transport.is_closing()
                and not transport.get_write_buffer_size()
            ):
                answer = self.fast.answer(data)
                if answer is not None:
                    head.answered()
                    watch.pending.discard(self)
                    transport.write(answer)
                    watch.idle[self] = time.monotonic()
                    return
        if head.tracking:
            head.feed(data)
            if head.started is None:
                watch.pending.discard(self)
            else:
                watch.pending.add(self)
        super().data_received(data)

    def head_timed_out(self) -> None:
        """Close the connection; say 408 first when no request of it was ever answered."""
        first = self.head.heads == 0 and self.head.dispatched == 0
        self.head.stop()
        transport = self.transport
        if transport is None:
            return
        if first:
            transport.write(_timeout_response())
        self.force_close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The envelope instead of aiohttp's text, which quotes the raw request line back.

        ``message`` is ignored on purpose: it holds the bytes that failed to parse.
        """
        reason = type(exc).__name__ if exc is not None else "unknown"
        if summary().admit(f"http_error {status} {reason}"):
            fields: dict[str, Any] = {"status": status, "reason": reason}
            if status >= 500 and exc is not None:
                fields["where"] = innermost_frame(exc.__traceback__)
            log.warning("bad_request" if status < 500 else "request_failed", **fields)
        if request.writer.output_size > 0:
            # Part of a response is out already: the only honest answer left is to hang up.
            raise ConnectionError("response already started; closing the connection")
        rid = next_request_id()
        if status >= 500:
            response = error_response(
                status, "INTERNAL", "The proxy failed unexpectedly; quote the requestId.", rid
            )
        else:
            response = error_response(
                status,
                "VALIDATION",
                "The request is not valid HTTP.",
                rid,
                details={"reason": reason},
            )
        response.force_close()
        return response
