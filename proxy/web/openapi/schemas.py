"""Component schemas: the bodies, the error envelope and the SSE events.

Bodies the upstream owns allow extra members (Layers may add fields within v1).
"""

from __future__ import annotations

from proxy.web.openapi.common import (
    ERROR_CODES,
    EXAMPLE_CONTAINER_ID,
    EXAMPLE_JOB_ID,
    Schema,
    ref,
)


def _stream_event(events: list[str], id_pattern: str, data: str) -> Schema:
    return {
        "type": "object",
        "required": ["event", "id", "data"],
        "properties": {
            "event": {"enum": events},
            "id": {"type": "string", "pattern": id_pattern},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": ref("schemas", data),
            },
            "retry": {"type": "integer", "minimum": 0},
        },
    }


_ERROR_EVENT: Schema = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"const": "error"},
        "id": {"type": "string"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/StreamError"},
        },
        "retry": {"type": "integer", "minimum": 0},
    },
}

_VERSION_ID = "^[0-9]{1,18}$"
_VECTOR_ID = r"^[0-9]{1,18}(\.[0-9]{1,18})*$"


def schemas() -> dict[str, Schema]:
    """``components/schemas``: every body and event the operations name."""
    iso = {"type": "string", "format": "date-time"}
    fraction = {"type": "number", "minimum": 0, "maximum": 1}
    status_text = "An open set: Layers may add values within v1."
    nullable_object = {"type": ["object", "null"]}
    return {
        "ContentProgress": {
            "type": "object",
            "description": "Layers' flat progress body (seed page). `stageProgress` resets to 0 "
            "at every stage change; `etaSeconds` is best-effort and may be null.",
            "required": ["containerId", "status", "stage", "stageProgress"],
            "additionalProperties": True,
            "properties": {
                "containerId": {"type": "string", "examples": [EXAMPLE_CONTAINER_ID]},
                "status": {
                    "type": "string",
                    "minLength": 1,
                    "description": "queued, processing (generating in older docs), completed, "
                    f"failed or canceled. {status_text}",
                    "examples": ["processing", "completed"],
                },
                "stage": {"type": "string", "examples": ["generating_visuals", "finalizing"]},
                "stageProgress": fraction,
                "etaSeconds": {"type": ["number", "null"], "minimum": 0},
                "updatedAt": iso,
            },
        },
        "Job": {
            "type": "object",
            "description": "Layers' job envelope. `running` is the only non-terminal status; "
            "`progress` only moves forward.",
            "required": ["jobId", "kind", "status"],
            "additionalProperties": True,
            "properties": {
                "jobId": {"type": "string", "examples": [EXAMPLE_JOB_ID]},
                "kind": {"type": "string", "examples": ["content_generate"]},
                "status": {
                    "type": "string",
                    "minLength": 1,
                    "description": f"running, completed, failed or canceled. {status_text}",
                },
                "stage": {"type": "string"},
                "progress": fraction,
                "projectId": {"type": "string"},
                "containerId": {"type": "string"},
                "locationUrl": {"type": "string"},
                "startedAt": iso,
                "finishedAt": iso,
                "result": {**nullable_object, "description": "`{containerId, assets}` on success."},
                "error": {**nullable_object, "description": "`{code, message}` on failure."},
            },
        },
        "ProgressBatch": {
            "type": "object",
            "required": ["items"],
            "properties": {
                "items": {
                    "type": "array",
                    "maxItems": 100,
                    "items": {
                        "anyOf": [
                            ref("schemas", "ContentProgress"),
                            ref("schemas", "BatchItemError"),
                        ]
                    },
                }
            },
        },
        "ProjectProgress": {
            "type": "object",
            "description": "The project's in-flight containers, then those that ended within "
            "`project_recent_s`; each item a container's progress body or its error.",
            "required": ["projectId", "items"],
            "properties": {
                "projectId": {"type": "string"},
                "items": {
                    "type": "array",
                    "items": {
                        "anyOf": [
                            ref("schemas", "ContentProgress"),
                            ref("schemas", "BatchItemError"),
                        ]
                    },
                },
            },
        },
        "ProjectStreamEvent": {
            "description": "`event: container` (no `id`) when a container appears in the "
            "project or ends, then `progress` events of each member. Every connect starts "
            "with the full current state; the stream does not end by itself.",
            "oneOf": [
                {
                    "type": "object",
                    "required": ["event", "data"],
                    "properties": {
                        "event": {"enum": ["container"]},
                        "data": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": ref("schemas", "ContainerAnnouncement"),
                        },
                    },
                },
                _stream_event(["progress"], _VECTOR_ID, "ProgressEvent"),
                _ERROR_EVENT,
            ],
        },
        "ContainerAnnouncement": {
            "type": "object",
            "required": ["containerId", "status"],
            "properties": {"containerId": {"type": "string"}, "status": {"type": "string"}},
        },
        "AdminState": {
            "type": "object",
            "additionalProperties": True,
            "required": ["generated_ms", "replica", "redis", "budget", "tenants", "resources"],
            "properties": {
                "generated_ms": {"type": "integer"},
                **{
                    k: {"type": "object"}
                    for k in ("replica", "redis", "budget", "tenants", "resources")
                },
            },
        },
        "BatchItemError": {
            "type": "object",
            "required": ["containerId", "error"],
            "additionalProperties": False,
            "properties": {
                "containerId": {"type": "string"},
                "error": ref("schemas", "Error"),
            },
        },
        "ErrorEnvelope": {
            "type": "object",
            "description": "The Layers error envelope; branch on `code`, never on `message`.",
            "required": ["error"],
            "properties": {"error": ref("schemas", "Error")},
        },
        "Error": {
            "type": "object",
            "required": ["code", "message", "requestId", "details"],
            "properties": {
                "code": {
                    "type": "string",
                    "enum": sorted({c for codes in ERROR_CODES.values() for c in codes}),
                },
                "message": {"type": "string"},
                "requestId": {"type": "string", "pattern": "^req_[0-9A-Z]{26}$"},
                "details": {"type": "object", "description": "Per-code structured data."},
            },
        },
        "ProgressEvent": {
            "description": "A progress stream event's data: the poll body, plus `lastError` "
            "on a failed container's final event.",
            "allOf": [
                ref("schemas", "ContentProgress"),
                {"properties": {"lastError": nullable_object}},
            ],
        },
        "StreamError": {
            "type": "object",
            "description": "An `error` event's data: the resource's id and the envelope's "
            "`error` object.",
            "required": ["error"],
            "minProperties": 2,
            "properties": {
                "containerId": {"type": "string"},
                "jobId": {"type": "string"},
                "error": ref("schemas", "Error"),
            },
        },
        "ProgressStreamEvent": {
            "oneOf": [_stream_event(["progress"], _VERSION_ID, "ProgressEvent"), _ERROR_EVENT]
        },
        "JobStreamEvent": {"oneOf": [_stream_event(["job"], _VERSION_ID, "Job"), _ERROR_EVENT]},
        "MultiStreamEvent": {
            "description": "`id` lists every resource's version in request order, dot-separated "
            "(`containers` first, then `jobs`).",
            "oneOf": [
                _stream_event(["progress"], _VECTOR_ID, "ProgressEvent"),
                _stream_event(["job"], _VECTOR_ID, "Job"),
                _ERROR_EVENT,
            ],
        },
        "WebhookEvent": {
            "type": "object",
            "description": "A Layers webhook delivery; `id`, when present, must equal "
            "`X-Layers-Event-Id`.",
            "required": ["type"],
            "additionalProperties": True,
            "properties": {
                "id": {"type": "string"},
                "type": {"type": "string", "examples": ["job.completed", "content.generated"]},
                "createdAt": iso,
                "data": {
                    "type": "object",
                    "description": "`jobId` (job events), `id` (content.generated), optional "
                    "`result.containerId` and `organizationId`.",
                },
            },
        },
        "WebhookAccepted": {
            "type": "object",
            "required": ["received"],
            "properties": {"received": {"const": True}},
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"const": "ok"}},
        },
        "Readiness": {
            "type": "object",
            "required": ["status", "checks"],
            "properties": {
                "status": {"enum": ["ready", "not ready"]},
                "checks": {
                    "type": "object",
                    "required": ["redis", "upstream_key", "upstream"],
                    "additionalProperties": {"type": "string"},
                    "properties": {
                        "redis": {"type": "string", "examples": ["ok", "embedded"]},
                        "upstream_key": {
                            "type": "string",
                            "examples": ["ok", "not yet checked", "rejected: 401"],
                        },
                        "upstream": {"type": "string"},
                    },
                },
            },
        },
        "AdminStats": {
            "type": "object",
            "required": ["client_requests", "upstream_requests", "tenants"],
            "additionalProperties": True,
            "properties": {
                "client_requests": {"type": "integer", "minimum": 0},
                "upstream_requests": {"type": "integer", "minimum": 0},
                "tenants": {"type": "object", "additionalProperties": {"type": "object"}},
            },
        },
    }
