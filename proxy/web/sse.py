"""Server-sent events framing: moved to ``proxy.streaming.sse`` (re-exported for old imports)."""

from __future__ import annotations

from proxy.streaming.sse import (
    HEARTBEAT,
    event_frame,
    named_frame,
    parse_vector_id,
    retry_frame,
    vector_id,
    with_last_error,
)

__all__ = [
    "HEARTBEAT",
    "event_frame",
    "named_frame",
    "parse_vector_id",
    "retry_frame",
    "vector_id",
    "with_last_error",
]
