"""CORS for tenants' browser apps: an exact origin allow-list, never ``*``, no credentials.

Active in token mode only. The allow-list is the union of every tenant's ``allowed_origins``;
when a request carries a token, its (claimed) tenant must be one that lists the origin, so a page
on tenant A's origin holding tenant B's token gets no CORS headers. A disallowed origin gets no
CORS headers at all: the request is still answered, but the browser keeps the answer from the
page. ``Access-Control-Allow-Credentials`` is never sent: tokens are bearer tokens, not cookies.

A catch-all OPTIONS route answers preflights (no token needed: browsers never send one there);
an ``on_response_prepare`` hook adds the headers to every other response, streams included, whose
headers go out inside the handler where no middleware can reach them. ``setup_cors`` installs both.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Mapping

import orjson
from aiohttp import web

from proxy.settings import Settings
from proxy.tokens import MAX_TOKEN_BYTES
from proxy.web.access import bearer_token

ALLOW_METHODS = "GET, OPTIONS"
ALLOW_HEADERS = "Authorization, If-None-Match, Prefer, Last-Event-ID"
EXPOSE_HEADERS = "ETag, Age, Cache-Status, X-Poll-Interval-Ms, Retry-After, X-Request-Id"
MAX_AGE_S = 600
_CLAIM_CACHE_SIZE = 4096

_VARY_ONLY: Mapping[str, str] = {"Vary": "Origin"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class CorsPolicy:
    """Which origin may read which answer."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.auth_mode == "tokens"
        origins: dict[str, set[str]] = {}
        for tenant in settings.tenants:
            for origin in tenant.allowed_origins:
                # Scheme and host are case-insensitive; browsers send them in lower case.
                origins.setdefault(origin.lower(), set()).add(tenant.id)
        self._origins = {o: frozenset(t) for o, t in origins.items()}
        self._claims: dict[str, str | None] = {}

    def allows(self, request: web.Request, origin: str) -> bool:
        """True when ``origin`` is listed and no token says it is another tenant's request."""
        tenants = self._origins.get(origin.lower())
        if tenants is None:
            return False
        token = bearer_token(request)
        claimed = self._claimed_tenant(token) if token else None
        # A token that names no tenant gets a 401 anyway; the page may read that.
        return claimed is None or claimed in tenants

    def _claimed_tenant(self, token: str) -> str | None:
        # Unverified on purpose: CORS only decides who may read the answer; the handler verifies
        # the token before answering anything but an error.
        if token in self._claims:
            return self._claims[token]
        if len(token) > MAX_TOKEN_BYTES:
            return None
        tenant: str | None = None
        parts = token.split(".")
        if len(parts) == 3:
            try:
                claims = orjson.loads(
                    base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
                )
            except ValueError:  # bad base64 or JSON (their errors are ValueErrors)
                claims = None
            if isinstance(claims, dict) and isinstance(claims.get("tenant"), str):
                tenant = claims["tenant"]
        if len(self._claims) >= _CLAIM_CACHE_SIZE:
            self._claims.clear()
        self._claims[token] = tenant
        return tenant

    def response_headers(self, request: web.Request) -> Mapping[str, str]:
        """The CORS headers of an actual (non-preflight) answer to ``request``."""
        origin = request.headers.get("Origin")
        if origin is None or not self.allows(request, origin):
            return _VARY_ONLY
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Expose-Headers": EXPOSE_HEADERS,
            "Vary": "Origin",
        }

    def preflight(self, request: web.Request, origin: str) -> web.Response:
        """The 204 answer to a preflight; without CORS headers when the origin is not allowed."""
        if not self.allows(request, origin):
            return web.Response(status=204, headers=_VARY_ONLY)
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": str(MAX_AGE_S),
                "Vary": "Origin",
            },
        )


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
            _apply(response, policy.response_headers(request))

    async def preflight(request: web.Request) -> web.StreamResponse:
        if _is_preflight(request):
            return policy.preflight(request, request.headers["Origin"])
        return web.Response(status=204, headers={"Allow": ALLOW_METHODS, "Vary": "Origin"})

    # A route rather than a middleware: only OPTIONS requests pay for it. Registered after the
    # application's own routes (call this last), so GETs never try it first.
    app.router.add_route("OPTIONS", "/{tail:.*}", preflight)
    app.on_response_prepare.append(add_headers)
