"""Component parameters: resource ids, conditional and long-poll headers, the SSE resume point."""

from __future__ import annotations

from proxy.web.openapi.common import (
    CONTAINER_ID_PATTERN,
    EXAMPLE_CONTAINER_ID,
    EXAMPLE_JOB_ID,
    EXAMPLE_PROJECT_ID,
    JOB_ID_PATTERN,
    PROJECT_ID_PATTERN,
    Schema,
)


def parameters() -> dict[str, Schema]:
    """``components/parameters``: the parameters operations share by ``$ref``."""

    def ids(name: str, pattern: str, example: str) -> Schema:
        return {
            "name": name,
            "in": "query",
            "description": f"Comma-separated {name} ids (at most 100 in all).",
            "style": "form",
            "explode": False,
            "schema": {
                "type": "array",
                "maxItems": 100,
                "items": {"type": "string", "pattern": pattern},
            },
            "examples": {"one": {"value": [example]}},
        }

    return {
        "containerId": {
            "name": "containerId",
            "in": "path",
            "required": True,
            "description": "A UUID, `cnt_<uuid>` or `cnt_<26-character ULID>`; anything else "
            "is a 400 with no upstream call.",
            "schema": {"type": "string", "maxLength": 64, "pattern": CONTAINER_ID_PATTERN},
            "examples": {"container": {"value": EXAMPLE_CONTAINER_ID}},
        },
        "jobId": {
            "name": "jobId",
            "in": "path",
            "required": True,
            "description": "`job_<26-character ULID>`.",
            "schema": {"type": "string", "maxLength": 64, "pattern": JOB_ID_PATTERN},
            "examples": {"job": {"value": EXAMPLE_JOB_ID}},
        },
        "ids": {
            "name": "ids",
            "in": "query",
            "required": True,
            "description": "Comma-separated container ids, at most 100; an invalid one is an "
            "error item, not a 400.",
            "style": "form",
            "explode": False,
            "schema": {
                "type": "array",
                "minItems": 1,
                "maxItems": 100,
                "items": {"type": "string", "minLength": 1},
            },
            "examples": {"one": {"value": [EXAMPLE_CONTAINER_ID]}},
        },
        "containers": ids("containers", CONTAINER_ID_PATTERN, EXAMPLE_CONTAINER_ID),
        "jobs": ids("jobs", JOB_ID_PATTERN, EXAMPLE_JOB_ID),
        "projectId": {
            "name": "projectId",
            "in": "path",
            "required": True,
            "description": "`prj_<uuid>` or `prj_<26-character ULID>`; in token mode the token "
            "must name the project (`projects` claim).",
            "schema": {"type": "string", "maxLength": 64, "pattern": PROJECT_ID_PATTERN},
            "examples": {"project": {"value": EXAMPLE_PROJECT_ID}},
        },
        "If-None-Match": {
            "name": "If-None-Match",
            "in": "header",
            "description": "ETags from earlier answers (or `*`): a match is a 304.",
            "schema": {"type": "string"},
        },
        "Prefer": {
            "name": "Prefer",
            "in": "header",
            "description": "`wait=N` (RFC 7240) with a matching `If-None-Match`: hold the "
            "request up to N seconds (capped at `long_poll_max_s`) for a change. Other "
            "preferences are ignored.",
            "schema": {"type": "string"},
            "examples": {"long-poll": {"value": "wait=1"}},
        },
        "Last-Event-ID": {
            "name": "Last-Event-ID",
            "in": "header",
            "description": "The last event id the client has: a version, or dot-separated "
            "versions on `/v1/stream`. Values the proxy did not issue are ignored.",
            "schema": {"type": "string"},
        },
        "lastEventId": {
            "name": "lastEventId",
            "in": "query",
            "description": "`Last-Event-ID` for a first `EventSource` connection, which cannot "
            "set headers.",
            "schema": {"type": "string"},
        },
    }
