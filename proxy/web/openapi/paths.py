"""Every route's operation, by path: the table ``GET /openapi.json`` describes.

To describe a new route, add one entry to ``paths()`` (and a tag to ``TAGS`` if it starts a new
group): a poll or stream route is a ``poll_operation`` / ``stream_operation`` call, anything else
a literal operation built from ``common``'s pieces. A new path or query parameter goes into
``parameters.py``, a new body into ``schemas.py``. ``tests/contract/test_document.py`` fails until
the document's operations are exactly the routes ``proxy.web.routes`` registers.
"""

from __future__ import annotations

from proxy.web.openapi.common import (
    METRICS_CONTENT_TYPE,
    OPEN_OR_TOKEN,
    Schema,
    errors,
    header,
    json_body,
    ref,
)
from proxy.web.openapi.operations import poll_operation, stream_operation, webhook_operation

# The document's tags, in the order viewers list them.
TAGS: list[Schema] = [
    {"name": "poll", "description": "Drop-in GET endpoints with ETag, 304, long-poll."},
    {"name": "push", "description": "Server-sent event streams."},
    {"name": "webhooks", "description": "Layers webhooks (signed)."},
    {"name": "ops", "description": "Health, readiness, admin, metrics, this document."},
    {"name": "browser", "description": "The dependency-free browser client."},
]


def paths() -> dict[str, Schema]:
    """``paths``: one entry per route ``proxy.web.routes`` registers, in reading order."""
    return {
        "/v1/content/{containerId}/progress": {
            "get": poll_operation(
                "getContentProgress",
                "A container's progress (drop-in for Layers' endpoint)",
                "containerId",
                "ContentProgress",
                "The upstream's `GET /v1/content/{containerId}/progress` body, coalesced into "
                "one upstream poll loop cluster-wide. Long-poll with `If-None-Match` plus "
                "`Prefer: wait=N` (N capped at `long_poll_max_s`, 30 s).",
            )
        },
        "/v1/jobs/{jobId}": {
            "get": poll_operation(
                "getJob",
                "A job's envelope (drop-in for Layers' endpoint)",
                "jobId",
                "Job",
                "The upstream's `GET /v1/jobs/{jobId}` envelope; polled upstream with its ETag, "
                "terminal jobs cached for good. Long-poll as for progress.",
            )
        },
        "/v1/content/progress": {
            "get": {
                "operationId": "getContentProgressBatch",
                "tags": ["poll"],
                "summary": "Many containers' progress in one request (list pages)",
                "description": "Items come back in the order asked, each the container's "
                "progress body exactly or `{containerId, error}`. Invalid or unknown ids are "
                "per-item errors, not a failed request.",
                "security": OPEN_OR_TOKEN,
                "parameters": [ref("parameters", "ids"), ref("parameters", "If-None-Match")],
                "responses": {
                    "200": {
                        "description": "One item per id.",
                        "headers": {
                            "ETag": header("ETag"),
                            "Cache-Control": header("Cache-Control"),
                            "X-Request-Id": header("X-Request-Id"),
                        },
                        "content": json_body(ref("schemas", "ProgressBatch")),
                    },
                    "304": {
                        "description": "`If-None-Match` matches the batch's ETag.",
                        "headers": {
                            "ETag": header("ETag"),
                            "X-Request-Id": header("X-Request-Id"),
                        },
                    },
                    **errors(401, 429),
                },
            }
        },
        "/v1/content/{containerId}/progress/stream": {
            "get": stream_operation(
                "streamContentProgress",
                "Server-sent `progress` events for one container",
                [ref("parameters", "containerId")],
                "ProgressStreamEvent",
            )
        },
        "/v1/jobs/{jobId}/stream": {
            "get": stream_operation(
                "streamJob",
                "Server-sent `job` events for one job",
                [ref("parameters", "jobId")],
                "JobStreamEvent",
            )
        },
        "/v1/stream": {
            "get": stream_operation(
                "streamMany",
                "One event stream for many containers and jobs (at most 100 ids)",
                [ref("parameters", "containers"), ref("parameters", "jobs")],
                "MultiStreamEvent",
            )
        },
        "/v1/projects/{projectId}/progress": {
            "get": {
                "operationId": "getProjectProgress",
                "tags": ["poll"],
                "summary": "A project's in-flight and recently ended containers (list pages)",
                "description": "The members come from the project's content list, polled "
                "upstream every `project_poll_s` (10 s) while somebody watches; each item is "
                "the container's cached progress body. In token mode the token must name the "
                "project.",
                "security": OPEN_OR_TOKEN,
                "parameters": [ref("parameters", "projectId"), ref("parameters", "If-None-Match")],
                "responses": {
                    "200": {
                        "description": "One item per member.",
                        "headers": {
                            "ETag": header("ETag"),
                            "Cache-Control": header("Cache-Control"),
                            "X-Request-Id": header("X-Request-Id"),
                        },
                        "content": json_body(ref("schemas", "ProjectProgress")),
                    },
                    "304": {
                        "description": "`If-None-Match` matches the answer's ETag.",
                        "headers": {
                            "ETag": header("ETag"),
                            "X-Request-Id": header("X-Request-Id"),
                        },
                    },
                    **errors(401, 404, 429, 502, 503, 504),
                },
            }
        },
        "/v1/projects/{projectId}/stream": {
            "get": stream_operation(
                "streamProject",
                "Server-sent `container` and `progress` events for a project's containers",
                [ref("parameters", "projectId")],
                "ProjectStreamEvent",
            )
        },
        "/v1/webhooks/layers": {"post": webhook_operation()},
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "tags": ["ops"],
                "summary": "Liveness",
                "responses": {
                    "200": {
                        "description": "The process accepts requests.",
                        "content": json_body(ref("schemas", "Health")),
                    },
                    **errors(),
                },
            }
        },
        "/admin": {
            "get": {
                "operationId": "adminPage",
                "tags": ["ops"],
                "summary": "The live admin page of the replica that answers (no data in it)",
                "description": "Needs no token: the page asks for the admin token and reads "
                "`/admin/state` with it.",
                "responses": {
                    "200": {
                        "description": "The page (`no-cache`).",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    },
                    "304": {"description": "Not modified since `If-Modified-Since`."},
                },
            }
        },
        "/admin/state": {
            "get": {
                "operationId": "adminState",
                "tags": ["ops"],
                "summary": "This replica's leases, cadences, budget, tenants, cooldown and Redis "
                "health",
                "description": "Needs `Authorization: Bearer $PROXY_ADMIN_TOKEN`; with no admin "
                "token configured every request gets 401. Describes only the replica that "
                "answers.",
                "security": [{"adminToken": []}],
                "responses": {
                    "200": {
                        "description": "The replica's state (fields may be added).",
                        "headers": {"Cache-Control": header("Cache-Control")},
                        "content": json_body(ref("schemas", "AdminState")),
                    },
                    **errors(401),
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "tags": ["ops"],
                "summary": "Readiness: Redis reachable and the upstream key not rejected",
                "responses": {
                    "200": {
                        "description": "Ready.",
                        "headers": {"Cache-Control": header("Cache-Control")},
                        "content": json_body(ref("schemas", "Readiness")),
                    },
                    "503": {
                        "description": "Not ready; `checks` says why.",
                        "headers": {"Cache-Control": header("Cache-Control")},
                        "content": json_body(ref("schemas", "Readiness")),
                    },
                    **errors(),
                },
            }
        },
        "/admin/stats": {
            "get": {
                "operationId": "adminStats",
                "tags": ["ops"],
                "summary": "This replica's counters, per-tenant usage and fair share",
                "description": "Needs `Authorization: Bearer $PROXY_ADMIN_TOKEN`; with no admin "
                "token configured every request gets 401.",
                "security": [{"adminToken": []}],
                "responses": {
                    "200": {
                        "description": "Counters (names may be added).",
                        "content": json_body(ref("schemas", "AdminStats")),
                    },
                    **errors(401),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "tags": ["ops"],
                "summary": "Prometheus metrics",
                "description": "The Prometheus text exposition format. When an admin token is "
                "configured it may be required as for `/admin/stats`.",
                "security": [{}, {"adminToken": []}],
                "responses": {
                    "200": {
                        "description": "Metrics in the Prometheus text format.",
                        "content": {METRICS_CONTENT_TYPE: {"schema": {"type": "string"}}},
                    },
                    **errors(401),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "tags": ["ops"],
                "summary": "This document",
                "description": "No authentication; cacheable (`ETag`, `Cache-Control`).",
                "parameters": [ref("parameters", "If-None-Match")],
                "responses": {
                    "200": {
                        "description": "The OpenAPI 3.1 document.",
                        "headers": {
                            "ETag": header("ETag"),
                            "Cache-Control": header("Cache-Control"),
                        },
                        "content": json_body({"type": "object", "required": ["openapi", "paths"]}),
                    },
                    "304": {
                        "description": "`If-None-Match` matches.",
                        "headers": {"ETag": header("ETag")},
                    },
                    **errors(),
                },
            }
        },
        "/static/{name}": {
            "get": {
                "operationId": "staticFile",
                "tags": ["browser"],
                "summary": "The browser client (`layers-progress.js`) and its modules",
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$"},
                        "examples": {"client": {"value": "layers-progress.js"}},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The file (revalidated on every use: `no-cache`).",
                        "content": {
                            media: {"schema": {}}
                            for media in (
                                "text/javascript",
                                "text/css",
                                "text/html",
                                "image/png",
                                "image/svg+xml",
                            )
                        },
                    },
                    "304": {"description": "Not modified since `If-Modified-Since`."},
                    **errors(404),
                },
            }
        },
    }
