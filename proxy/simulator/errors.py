"""JSON responses, and the one place that shapes the Layers error envelope."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

JSON = "application/json"
# Codes for statuses the router produces itself (unknown path, wrong method).
ROUTER_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 422: "VALIDATION"}


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """Serialize ``data`` with orjson into a JSON response."""
    return web.Response(body=orjson.dumps(data), status=status, content_type=JSON, headers=headers)


def error_response(
    status: int,
    code: str,
    message: str,
    request_id: str,
    *,
    details: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """Answer with ``{"error": {code, message, requestId, details}}``."""
    error = {"code": code, "message": message, "requestId": request_id, "details": details or {}}
    return json_response({"error": error}, status, headers)


def from_http_exception(exc: web.HTTPException, request_id: str) -> web.Response:
    """Turn an aiohttp HTTP exception (raised by the router or a handler) into an envelope."""
    code = ROUTER_CODES.get(exc.status, "INTERNAL" if exc.status >= 500 else "BAD_REQUEST")
    return error_response(exc.status, code, exc.reason, request_id)
