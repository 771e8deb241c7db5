"""Errors a client can meet, each with its HTTP status and the upstream's envelope code.

    ProxyError                      (status, code, message, details, headers)
    ├── InvalidRequest              400/414/422 VALIDATION: bad id or request, no upstream call
    ├── Unauthenticated             401 UNAUTHENTICATED: missing or invalid capability token
    ├── TokenExpired                401 TOKEN_EXPIRED: an open stream's token reached its exp
    ├── NotFound                    404 NOT_FOUND: unknown resource, or not the caller's
    ├── Conflict                    409 CONFLICT: a replayed webhook event
    ├── PayloadTooLarge             413 PAYLOAD_TOO_LARGE: an oversized webhook body
    ├── TooManyRequests             429 RATE_LIMITED: the caller is over a limit of its own
    ├── UpstreamTimeout             504 UPSTREAM_TIMEOUT: Layers did not answer in time
    ├── UpstreamRateLimited         503 UPSTREAM_RATE_LIMITED: the shared key is cooling down
    └── Unavailable                 503 UNAVAILABLE: retry later (e.g. Redis unreachable)

Upstream failures with nothing cached are answered with the code recorded with the failure
(``UPSTREAM_AUTH``, ``UPSTREAM_UNAVAILABLE``, ...; see ``services.watching.raise_for_error_only``).
``envelope()`` builds the body every error uses, the shape of the Layers error envelope.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson


def error_object(
    code: str, message: str, request_id: str, details: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The envelope's ``error`` member; every error body and error event is built from it."""
    return {
        "code": code,
        "message": message,
        "requestId": request_id,
        "details": dict(details or {}),
    }


def envelope(
    code: str, message: str, request_id: str, details: Mapping[str, Any] | None = None
) -> bytes:
    """The error body: ``{"error": {"code", "message", "requestId", "details"}}``."""
    return orjson.dumps({"error": error_object(code, message, request_id, details)})


class ProxyError(Exception):
    """An error answered to the client with ``status`` and the envelope."""

    status = 500
    code = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = dict(details or {})
        self.headers = dict(headers or {})
        if status is not None:
            self.status = status


class InvalidRequest(ProxyError):
    status = 400
    code = "VALIDATION"


class Unauthenticated(ProxyError):
    status = 401
    code = "UNAUTHENTICATED"


class TokenExpired(ProxyError):
    """Ends a stream at its token's exp (a final ``event: error``; reconnecting gets 401)."""

    status = 401
    code = "TOKEN_EXPIRED"


class NotFound(ProxyError):
    status = 404
    code = "NOT_FOUND"


class Conflict(ProxyError):
    status = 409
    code = "CONFLICT"


class PayloadTooLarge(ProxyError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"


class Unavailable(ProxyError):
    status = 503
    code = "UNAVAILABLE"


class TooManyRequests(ProxyError):
    status = 429
    code = "RATE_LIMITED"


class UpstreamTimeout(ProxyError):
    status = 504
    code = "UPSTREAM_TIMEOUT"


class UpstreamRateLimited(ProxyError):
    status = 503
    code = "UPSTREAM_RATE_LIMITED"
