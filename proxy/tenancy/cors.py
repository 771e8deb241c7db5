"""Which browser origin may read which answer (pure: origins and tokens in, headers out).

The allow-list is the union of every tenant's ``allowed_origins``; when a request carries a
token, its (claimed) tenant must be one that lists the origin, so a page on tenant A's origin
holding tenant B's token gets no CORS headers. Never ``*``, never credentials: tokens are bearer
tokens, not cookies. ``proxy.web.cors`` applies these headers to aiohttp requests.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

import orjson

from proxy.settings import Settings
from proxy.tenancy.tokens import MAX_TOKEN_BYTES

ALLOW_METHODS = "GET, OPTIONS"
ALLOW_HEADERS = "Authorization, If-None-Match, Prefer, Last-Event-ID"
EXPOSE_HEADERS = "ETag, Age, Cache-Status, X-Poll-Interval-Ms, Retry-After, X-Request-Id"
MAX_AGE_S = 600
_CLAIM_CACHE_SIZE = 4096

VARY_ONLY: Mapping[str, str] = {"Vary": "Origin"}


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

    def allows(self, origin: str, token: str) -> bool:
        """True when ``origin`` is listed and no token says it is another tenant's request."""
        tenants = self._origins.get(origin.lower())
        if tenants is None:
            return False
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

    def response_headers(self, origin: str | None, token: str) -> Mapping[str, str]:
        """The CORS headers of an actual (non-preflight) answer."""
        if origin is None or not self.allows(origin, token):
            return VARY_ONLY
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Expose-Headers": EXPOSE_HEADERS,
            "Vary": "Origin",
        }

    def preflight_headers(self, origin: str, token: str) -> Mapping[str, str]:
        """The headers of the 204 answer to a preflight (none but Vary when not allowed)."""
        if not self.allows(origin, token):
            return VARY_ONLY
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": str(MAX_AGE_S),
            "Vary": "Origin",
        }
