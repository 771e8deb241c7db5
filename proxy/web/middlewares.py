"""The edge: request ids, size limits, ``Expect``, error envelopes, the access log.

One layer: ``guard_handler`` wraps the application as a whole, as the server's request handler
(it runs before aiohttp's router, whose default ``Expect`` handling turned a non-UTF-8 value into
a 500); ``install_edge`` puts it in front of a set-up runner.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import HttpVersion10, HttpVersion11, web

from proxy.errors import ProxyError
from proxy.logs import summary
from proxy.request_ids import next_request_id
from proxy.settings import Settings
from proxy.web import keys
from proxy.web.event_stream import EventStream
from proxy.web.headers import expect_is_continue
from proxy.web.metrics_routes import count_response
from proxy.web.responses import error_response, proxy_error_response

log = structlog.get_logger("proxy.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AppHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    404: ("NOT_FOUND", "No such endpoint."),
    405: ("METHOD_NOT_ALLOWED", "This endpoint does not support that method."),
    413: ("PAYLOAD_TOO_LARGE", "The request body is too large."),
}
_MAX_LOGGED_PATH = 200
_VERSIONS = (HttpVersion10, HttpVersion11)


class Edge:
    """What the edge needs at every request: the limits, the log policy, the head-watch hooks."""

    __slots__ = ("access_log", "limiter", "max_headers", "max_url", "on_done", "on_request")

    def __init__(
        self,
        settings: Settings,
        on_request: Callable[[web.BaseRequest], None] | None = None,
        on_done: Callable[[web.BaseRequest], None] | None = None,
    ) -> None:
        self.max_url = settings.max_url_bytes
        self.max_headers = settings.max_header_bytes
        self.access_log = settings.access_log
        self.limiter = summary()
        self.on_request = on_request
        self.on_done = on_done


def guard_handler(
    inner: AppHandler,
    settings: Settings,
    on_request: Callable[[web.BaseRequest], None] | None = None,
    on_done: Callable[[web.BaseRequest], None] | None = None,
) -> AppHandler:
    """The application's handler behind the edge (installed as the server's request handler).

    It runs before aiohttp's router: only HTTP/1.0 and 1.1 are served (aiohttp would take
    "HTTP/2.0" or a version-less 0.9 request line with headers as if they were 1.x);
    ``Expect: 100-continue`` goes on to aiohttp (which answers ``100 Continue``), any other
    expectation is refused with a 417, whatever bytes it holds. Then the request gets its id,
    the size limits, error envelopes and the access log. ``on_request`` sees every parsed
    request first and ``on_done`` when its handler returned (the header-timeout bookkeeping).

    A partial (positional: no keyword dict per call) of one coroutine function, and the
    application has no middleware: one frame per
    request in flight. A stream's body (an ``EventStream``) runs after this returns; it calls
    ``on_done`` itself when it ends.
    """
    return functools.partial(_edge, inner, Edge(settings, on_request, on_done))


def install_edge(
    runner: web.BaseRunner,
    settings: Settings,
    on_request: Callable[[web.BaseRequest], None] | None = None,
    on_done: Callable[[web.BaseRequest], None] | None = None,
) -> None:
    """Put the edge in front of ``runner``'s application (``serve``, the demo, test servers).

    Call it after ``runner.setup()`` and before the first connection: each connection copies
    the server's handler as it opens.
    """
    server = runner.server
    if server is None:
        raise RuntimeError("install_edge needs a runner that has been set up")
    server.request_handler = guard_handler(server.request_handler, settings, on_request, on_done)


async def _edge(inner: AppHandler, edge: Edge, request: web.BaseRequest) -> web.StreamResponse:
    if edge.on_request is not None:
        edge.on_request(request)
    response: web.StreamResponse | None = None
    try:
        if request.version not in _VERSIONS:
            return _refuse(request, 400, "Only HTTP/1.0 and HTTP/1.1 are served.")
        expect = request.headers.get("Expect")
        if expect and not expect_is_continue(expect):
            return _refuse(request, 417, "Only 'Expect: 100-continue' is supported.")
        rid = next_request_id()
        keys.set_request_id(request, rid)
        started = time.perf_counter()
        refused = _refused_head(request, edge, rid)
        if refused is not None:
            response = refused
        else:
            try:
                response = await inner(request)
            except ProxyError as exc:
                response = proxy_error_response(exc, rid)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                response = _http_error(exc, rid)
            except Exception as exc:
                response = _failed(request, exc, edge, rid)
            if not response.prepared:  # a stream counted itself as it sent its head
                count_response(request, response)
        _access_log(request, response.status, edge, rid, started)
        return response
    finally:
        if edge.on_done is not None:
            if isinstance(response, EventStream):
                response.call_when_done(edge.on_done)  # its body runs after this returns
            else:
                edge.on_done(request)


def _refuse(request: web.BaseRequest, status: int, message: str) -> web.Response:
    rid = next_request_id()
    if summary().admit(f"request {status}"):
        log.info("request", method=request.method, status=status, request_id=rid)
    response = error_response(status, "VALIDATION", message, rid)
    response.force_close()  # the client may be holding back a body we will not read
    return response


def _refused_head(request: web.BaseRequest, edge: Edge, rid: str) -> web.Response | None:
    """The answer to a request line or headers over the limits, else None."""
    if len(request.raw_path) > edge.max_url:
        return error_response(
            414, "VALIDATION", f"The URL is longer than {edge.max_url} bytes.", rid
        )
    if sum(len(k) + len(v) for k, v in request.raw_headers) > edge.max_headers:
        return error_response(
            431, "VALIDATION", f"The request headers exceed {edge.max_headers} bytes.", rid
        )
    if not request.headers.get("Authorization", "").isascii():
        # Tokens are ASCII; other bytes would only reach code that compares or encodes them.
        return error_response(400, "VALIDATION", "The Authorization header must be ASCII.", rid)
    return None


def _http_error(exc: web.HTTPException, rid: str) -> web.Response:
    if exc.status == 405 and exc.headers.get("Allow") == "OPTIONS":
        # Only the CORS preflight catch-all matched: no route serves this path.
        exc = web.HTTPNotFound()
    code, message = _HTTP_CODES.get(exc.status, ("VALIDATION", exc.reason))
    # A 405 must say which methods the resource allows (RFC 9110 §15.5.6).
    allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return error_response(exc.status, code, message, rid, headers=allow)


def _failed(request: web.BaseRequest, exc: Exception, edge: Edge, rid: str) -> web.Response:
    # One traceback per kind of failure; repeats are counted, not printed.
    if edge.limiter.admit(f"handler_failed {type(exc).__name__}"):
        log.exception("handler_failed", path=_loggable(request), request_id=rid)
    return error_response(
        500, "INTERNAL", "The proxy failed unexpectedly; quote the requestId.", rid
    )


def _access_log(
    request: web.BaseRequest, status: int, edge: Edge, rid: str, started: float
) -> None:
    access_log = edge.access_log
    if access_log == "all" or (
        # Errors are what a flood of bad requests produces: one line per status, then counts.
        access_log == "errors" and status >= 400 and edge.limiter.admit(f"request {status}")
    ):
        log.info(
            "request",
            method=request.method,
            path=_loggable(request),
            status=status,
            request_id=rid,
            ms=round((time.perf_counter() - started) * 1000, 2),
        )


def _loggable(request: web.BaseRequest) -> str:
    # The path only (query strings carry access tokens), cut short: it is client-chosen text.
    return request.path[:_MAX_LOGGED_PATH]
