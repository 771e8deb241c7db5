"""The edge middleware: request ids, size limits, error envelopes, the access log."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from proxy.errors import ProxyError
from proxy.settings import Settings
from proxy.web import keys
from proxy.web.request_ids import next_request_id
from proxy.web.responses import error_response, proxy_error_response

log = structlog.get_logger("proxy.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    404: ("NOT_FOUND", "No such endpoint."),
    405: ("METHOD_NOT_ALLOWED", "This endpoint does not support that method."),
    413: ("PAYLOAD_TOO_LARGE", "The request body is too large."),
}


def make_edge_middleware(settings: Settings) -> Middleware:
    """Build the middleware; limits and logging come from settings."""
    max_url = settings.max_url_bytes
    max_headers = settings.max_header_bytes
    access_log = settings.access_log

    @web.middleware
    async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = next_request_id()
        request[keys.REQUEST_ID] = rid
        started = time.perf_counter()
        response: web.StreamResponse
        if len(request.raw_path) > max_url:
            response = error_response(
                414, "VALIDATION", f"The URL is longer than {max_url} bytes.", rid
            )
        elif sum(len(k) + len(v) for k, v in request.raw_headers) > max_headers:
            response = error_response(
                431, "VALIDATION", f"The request headers exceed {max_headers} bytes.", rid
            )
        else:
            try:
                response = await handler(request)
            except ProxyError as exc:
                response = proxy_error_response(exc, rid)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                code, message = _HTTP_CODES.get(exc.status, ("VALIDATION", exc.reason))
                response = error_response(exc.status, code, message, rid)
            except Exception:
                log.exception("handler_failed", path=request.path, request_id=rid)
                response = error_response(
                    500, "INTERNAL", "The proxy failed unexpectedly; quote the requestId.", rid
                )
        if access_log == "all" or (access_log == "errors" and response.status >= 400):
            # The path only: query strings can carry access tokens.
            log.info(
                "request",
                method=request.method,
                path=request.path,
                status=response.status,
                request_id=rid,
                ms=round((time.perf_counter() - started) * 1000, 2),
            )
        return response

    return edge
