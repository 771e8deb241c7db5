"""Operation templates: the shapes several routes share (poll, stream) and the webhook.

A new poll route (ETag, 304, long-poll) is ``poll_operation(...)``; a new SSE route is
``stream_operation(...)``; both go into the table in ``paths.py``.
"""

from __future__ import annotations

from proxy.web.openapi.common import (
    OPEN_OR_TOKEN,
    Schema,
    errors,
    header,
    json_body,
    ref,
    snapshot_headers,
)


def poll_operation(op_id: str, summary: str, param: str, body: str, text: str) -> Schema:
    """A drop-in GET of one resource: path parameter ``param``, 200 with schema ``body`` and
    the snapshot headers, 304 on ``If-None-Match``, long-poll with ``Prefer: wait=N``."""
    return {
        "operationId": op_id,
        "tags": ["poll"],
        "summary": summary,
        "description": text,
        "security": OPEN_OR_TOKEN,
        "parameters": [
            ref("parameters", param),
            ref("parameters", "If-None-Match"),
            ref("parameters", "Prefer"),
        ],
        "responses": {
            "200": {
                "description": "The upstream's body, byte for byte (a stale one is marked in "
                "`Cache-Status`).",
                "headers": snapshot_headers(),
                "content": json_body(ref("schemas", body)),
            },
            "304": {
                "description": "`If-None-Match` matches the current ETag (after the long poll, "
                "if `Prefer: wait` asked for one and nothing changed).",
                "headers": snapshot_headers(),
            },
            **errors(401, 404, 429, 502, 503, 504),
        },
    }


def stream_operation(op_id: str, summary: str, params: list[Schema], events: str) -> Schema:
    """An SSE stream of the resources ``params`` name, each event as schema ``events``."""
    return {
        "operationId": op_id,
        "tags": ["push"],
        "summary": summary,
        "description": (
            "Server-sent events. The first write is a `retry:` hint (`sse_retry_ms` to twice "
            "that, jittered), then the current state of every resource at once; after that one "
            "event per new version, latest state wins. Idle streams get a `: hb` comment every "
            "`sse_heartbeat_s` (15 s). "
            "The stream ends after every resource's terminal event; a failed container's final "
            "event carries its `lastError`. An `error` event reports a resource that cannot be "
            "read (4xx ones are final; upstream trouble may heal). On shutdown the proxy sends a "
            "short `retry:` and closes, so clients reconnect elsewhere at once. Reconnect with "
            "`Last-Event-ID` (or `?lastEventId=` from `EventSource`) to skip what the client has."
        ),
        "security": OPEN_OR_TOKEN,
        "parameters": [
            *params,
            ref("parameters", "Last-Event-ID"),
            ref("parameters", "lastEventId"),
        ],
        "responses": {
            "200": {
                "description": "The event stream; each event (`event`, `id`, `data`) as `schema`.",
                "headers": {
                    "X-Request-Id": header("X-Request-Id"),
                    "Cache-Control": header("Cache-Control"),
                },
                "content": {"text/event-stream": {"schema": ref("schemas", events)}},
            },
            "204": {
                "description": "`Last-Event-ID` names the terminal state already: nothing to "
                "send (this stops `EventSource`).",
                "headers": {"X-Request-Id": header("X-Request-Id")},
            },
            **errors(401, 404, 429),
        },
    }


def webhook_operation() -> Schema:
    """``POST /v1/webhooks/layers``."""
    return {
        "operationId": "receiveLayersWebhook",
        "tags": ["webhooks"],
        "summary": "Signed Layers webhooks end polling early",
        "description": "Checked in order: a secret configured (404 when none is: the "
        "endpoint is off), body size (413), "
        "signature (401), event id and body (400), then the event id is recorded cluster-wide "
        "(a replay gets 409). `job.completed|failed|canceled` and `content.generated` refresh "
        "the resources they name; other types are accepted and ignored.",
        "parameters": [
            {
                "name": "X-Layers-Signature",
                "in": "header",
                "required": True,
                "description": "`t=<unix>,v1=<hex>`: HMAC-SHA256 of `<t>.<raw body>` with the "
                "endpoint's secret; several `v1` during a rotation; 5 minutes' tolerance.",
                "schema": {"type": "string"},
            },
            {
                "name": "X-Layers-Event-Id",
                "in": "header",
                "required": True,
                "description": "The delivery's event id; the same across Layers' retries.",
                "schema": {"type": "string", "pattern": "^evt_[0-9A-Za-z]{26}$"},
            },
        ],
        "requestBody": {
            "required": True,
            "content": json_body(ref("schemas", "WebhookEvent")),
        },
        "responses": {
            "202": {
                "description": "A new event, accepted; refreshes run after the answer.",
                "headers": {
                    "X-Request-Id": header("X-Request-Id"),
                    "Cache-Control": header("Cache-Control"),
                },
                "content": json_body(ref("schemas", "WebhookAccepted")),
            },
            **errors(401, 404, 409, 413, 503),
        },
    }
