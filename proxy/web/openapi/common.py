"""Building blocks of the OpenAPI document: id grammars, headers, the error envelope by status.

Shared by ``schemas``, ``parameters``, ``operations`` and ``paths`` so each piece is written once.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

Schema = dict[str, Any]

# The grammar of ``proxy.ids`` in ECMA-262 syntax (JSON Schema's regex dialect).
_UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_ULID = "[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}"
CONTAINER_ID_PATTERN = f"^(?:(?:cnt_)?{_UUID}|cnt_{_ULID})$"
JOB_ID_PATTERN = f"^job_{_ULID}$"
PROJECT_ID_PATTERN = f"^prj_(?:{_UUID}|{_ULID})$"
EXAMPLE_PROJECT_ID = "prj_7c9e6679-7425-40de-944b-e07fc1f90ae7"
EXAMPLE_CONTAINER_ID = "cnt_3f2b8c1e-9a4d-4e7b-8c21-0a1b2c3d4e5f"
EXAMPLE_JOB_ID = "job_01J0000000000000000000000A"

# What /metrics serves; the format version follows the installed prometheus_client.
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
# Long enough that crawlers and doc viewers do not refetch on every page; ETag covers the rest.
CACHE_CONTROL = "public, max-age=300"

# Every error code the proxy answers with, by HTTP status.
ERROR_CODES: dict[int, tuple[str, ...]] = {
    400: ("VALIDATION",),
    401: ("UNAUTHENTICATED", "TOKEN_EXPIRED"),
    404: ("NOT_FOUND",),
    405: ("METHOD_NOT_ALLOWED",),
    409: ("CONFLICT",),
    413: ("PAYLOAD_TOO_LARGE",),
    414: ("VALIDATION",),
    417: ("VALIDATION",),
    429: ("RATE_LIMITED",),
    431: ("VALIDATION",),
    500: ("INTERNAL",),
    502: ("UPSTREAM_AUTH", "UPSTREAM_UNAVAILABLE"),
    503: ("UPSTREAM_RATE_LIMITED", "UNAVAILABLE"),
    504: ("UPSTREAM_TIMEOUT",),
}

_ERROR_TEXT = {
    400: "Malformed request: a bad id or query, or a non-ASCII `Authorization` header.",
    401: "No capability token, or an invalid or expired one (one message for every reason); "
    "`TOKEN_EXPIRED` is the final `error` event of a stream whose token reached its `exp`.",
    404: "No such resource or endpoint, or not the caller's (one answer, so nothing leaks).",
    405: "The path exists but not for this method.",
    409: "A replayed webhook event id.",
    413: "The webhook body is larger than 256 KB.",
    414: "The URL is longer than `max_url_bytes`.",
    417: "An `Expect` header other than `100-continue`.",
    429: "The caller is over one of its tenant's limits (`details` names it).",
    431: "The request headers are larger than `max_header_bytes`.",
    500: "The proxy failed unexpectedly; quote the `requestId`.",
    502: "Layers rejected the proxy's key, or failed with nothing cached yet.",
    503: "The shared key is cooling down after a Layers 429, or Redis is unreachable.",
    504: "Layers did not answer in time and nothing is cached yet.",
}

# Answers the edge can give on any route, before or around the handler.
_EDGE = (400, 414, 417, 431, 500)


_HEADERS: dict[str, Schema] = {
    "ETag": {
        "description": "A strong entity tag of the body, identical on every replica.",
        "schema": {"type": "string", "pattern": '^(W/)?"[^"]*"$'},
    },
    "Age": {
        "description": "Seconds since the upstream last confirmed this snapshot.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "Cache-Status": {
        "description": "RFC 9211: `layers-proxy; hit`, `layers-proxy; hit; ttl=-N; "
        "detail=stale`, or `layers-proxy; fwd=miss; fwd-status=200; stored|collapsed`.",
        "schema": {"type": "string", "pattern": "^layers-proxy; (hit|fwd=miss)"},
    },
    "Cache-Control": {"schema": {"type": "string"}},
    "X-Poll-Interval-Ms": {
        "description": "How often a polling client should come back (the proxy's own "
        "upstream cadence).",
        "schema": {"type": "integer", "minimum": 0},
    },
    "X-Request-Id": {
        "description": "This request's id; the same as `error.requestId` on errors.",
        "schema": {"type": "string", "pattern": "^req_[0-9A-Z]{26}$"},
    },
    "Preference-Applied": {
        "description": "`wait=N`: the long poll honoured, N after the cap.",
        "schema": {"type": "string", "pattern": "^wait=[0-9]+$"},
    },
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 0},
    },
}


def ref(kind: str, name: str) -> Schema:
    """A ``$ref`` to ``#/components/<kind>/<name>``."""
    return {"$ref": f"#/components/{kind}/{name}"}


def header(name: str, *, required: bool = True) -> Schema:
    """Response header ``name`` (from ``_HEADERS``), required unless told otherwise."""
    # Inlined, not a $ref: `required` belongs to each use, and 3.1 ignores siblings of $ref.
    return {**_HEADERS[name], "required": required}


def json_body(schema: Schema) -> Schema:
    """A ``content`` map with one ``application/json`` body of ``schema``."""
    return {"application/json": {"schema": schema}}


def errors(*statuses: int) -> dict[str, Schema]:
    """The error responses of an operation: ``statuses`` plus the edge's, by status."""
    return {str(s): ref("responses", f"Error{s}") for s in sorted(set(statuses) | set(_EDGE))}


def error_response(status: int) -> Schema:
    """The shared ``components/responses/Error<status>``: the envelope narrowed to its codes."""
    headers: dict[str, Schema] = {
        "X-Request-Id": header("X-Request-Id"),
        "Cache-Control": header("Cache-Control"),
    }
    if status == 429:
        headers["Retry-After"] = header("Retry-After")
    elif status == 503:
        headers["Retry-After"] = header("Retry-After", required=False)
    codes = ERROR_CODES[status]
    narrowed: Schema = {
        "allOf": [
            ref("schemas", "ErrorEnvelope"),
            {"properties": {"error": {"properties": {"code": {"enum": list(codes)}}}}},
        ]
    }
    return {
        "description": f"{_ERROR_TEXT[status]} Codes: {', '.join(codes)}.",
        "headers": headers,
        "content": json_body(narrowed),
    }


def snapshot_headers() -> dict[str, Schema]:
    """The headers of a poll answer (200 or 304)."""
    return {
        "ETag": header("ETag"),
        "Age": header("Age"),
        "Cache-Status": header("Cache-Status"),
        "Cache-Control": header("Cache-Control"),
        "X-Poll-Interval-Ms": header("X-Poll-Interval-Ms"),
        "X-Request-Id": header("X-Request-Id"),
        "Preference-Applied": header("Preference-Applied", required=False),
    }


# The /v1 reads: open (PROXY_AUTH=none), or a capability token in the header or the query.
OPEN_OR_TOKEN: list[Schema] = [{}, {"capabilityToken": []}, {"capabilityTokenQuery": []}]
