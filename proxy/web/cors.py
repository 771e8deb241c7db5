"""CORS on the aiohttp app, in token mode only (the policy itself: ``proxy.tenancy.cors``).

A disallowed origin gets no CORS headers at all: the request is still answered, but the
browser keeps the answer from the page. A catch-all OPTIONS route answers preflights (no token
needed: browsers never send one there); an ``on_response_prepare`` hook adds the headers to
every other response, streams included, whose headers go out inside the handler where no
middleware can reach them. ``setup_cors`` installs both.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from proxy.settings import Settings
from proxy.tenancy.access import bearer_token
from proxy.tenancy.cors import ALLOW_HEADERS, ALLOW_METHODS, EXPOSE_HEADERS, CorsPolicy

__all__ = ["ALLOW_HEADERS", "ALLOW_METHODS", "EXPOSE_HEADERS", "setup_cors"]


def _apply(response: web.StreamResponse, headers: Mapping[str, str]) -> None:
    for name, value in headers.items():
        if name == "Vary":
            vary = response.headers.get("Vary")
            if vary and "origin" in vary.lower():
                continue
            if vary:
                value = f"{vary}, {value}"
        response.headers[name] = value


def _is_preflight(request: web.Request) -> bool:
    return (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )


def setup_cors(app: web.Application, settings: Settings) -> None:
    """Install CORS on ``app`` (nothing in open mode): preflights and every response's headers.

    Call it after the application's routes are registered.
    """
    policy = CorsPolicy(settings)
    if not policy.enabled:
        return

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        if not _is_preflight(request):
            origin = request.headers.get("Origin")
            _apply(response, policy.response_headers(origin, bearer_token(request)))

    async def preflight(request: web.Request) -> web.StreamResponse:
        if _is_preflight(request):
            origin = request.headers["Origin"]
            headers = policy.preflight_headers(origin, bearer_token(request))
            return web.Response(status=204, headers=headers)
        return web.Response(status=204, headers={"Allow": ALLOW_METHODS, "Vary": "Origin"})

    # A route rather than a middleware: only OPTIONS requests pay for it. Registered after the
    # application's own routes (call this last), so GETs never try it first.
    app.router.add_route("OPTIONS", "/{tail:.*}", preflight)
    app.on_response_prepare.append(add_headers)
