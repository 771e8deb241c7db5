"""The OpenAPI 3.1 description of every public route, served at ``GET /openapi.json``.

Built as Python data so shared pieces (the error envelope, snapshot headers, id patterns) are
written once. Bodies the upstream owns allow extra members: Layers may add response fields within
v1. ``tests/contract`` validates the document and runs schemathesis against a live proxy.

The modules: ``common`` (id grammars, headers, error responses by status), ``schemas`` and
``parameters`` (components), ``operations`` (poll/stream templates, the webhook), ``paths`` (every
route's operation: add a new route there). This module assembles the document and serves it.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import orjson
from aiohttp import web

from proxy import __version__
from proxy.web.headers import etag_matches
from proxy.web.openapi.common import (
    CACHE_CONTROL,
    CONTAINER_ID_PATTERN,
    ERROR_CODES,
    EXAMPLE_CONTAINER_ID,
    EXAMPLE_JOB_ID,
    JOB_ID_PATTERN,
    METRICS_CONTENT_TYPE,
    Schema,
    error_response,
)
from proxy.web.openapi.parameters import parameters
from proxy.web.openapi.paths import TAGS, paths
from proxy.web.openapi.schemas import schemas

__all__ = [
    "CACHE_CONTROL",
    "CONTAINER_ID_PATTERN",
    "ERROR_CODES",
    "EXAMPLE_CONTAINER_ID",
    "EXAMPLE_JOB_ID",
    "JOB_ID_PATTERN",
    "METRICS_CONTENT_TYPE",
    "Schema",
    "document",
    "get_openapi",
]


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document as JSON-ready data (a new copy on every call)."""
    # Deep-copied: the pieces above are shared module data that a caller must not alter.
    return copy.deepcopy(_document())


def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Layers Progress Proxy",
            "version": __version__,
            "summary": "Coalescing cache and fan-out in front of the Layers Partner API's "
            "progress and job endpoints.",
            "description": "Poll bodies are Layers' own, byte for byte; every error uses the "
            "Layers envelope `{error: {code, message, requestId, details}}`. With "
            "`PROXY_AUTH=tokens` the `/v1` reads need a tenant's capability token and answer "
            "CORS preflights (`OPTIONS` on any path) for the tenants' origins; with "
            "`PROXY_AUTH=none` they are open.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "tags": TAGS,
        "paths": paths(),
        "components": {
            "schemas": schemas(),
            "parameters": parameters(),
            "responses": {f"Error{s}": error_response(s) for s in sorted(ERROR_CODES)},
            "securitySchemes": {
                "capabilityToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A tenant's capability token (token mode only).",
                },
                "capabilityTokenQuery": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "access_token",
                    "description": "The capability token for `EventSource`, which cannot set "
                    "headers.",
                },
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`PROXY_ADMIN_TOKEN`.",
                },
            },
        },
    }


class _Served:
    """The document's bytes and ETag, built on first use and kept for the process's life."""

    body: bytes = b""
    etag: str = ""

    @classmethod
    def get(cls) -> tuple[bytes, str]:
        if not cls.body:
            cls.body = orjson.dumps(document())
            cls.etag = '"' + hashlib.blake2b(cls.body, digest_size=10).hexdigest() + '"'
        return cls.body, cls.etag


async def get_openapi(request: web.Request) -> web.Response:
    """GET /openapi.json: this document (no auth; cacheable, with ETag and 304)."""
    body, etag = _Served.get()
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if etag_matches(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/json", headers=headers)
