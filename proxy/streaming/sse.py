"""Server-sent events framing and stream ids (pure: bytes in, bytes out, no HTTP)."""

from __future__ import annotations

import random
import re

HEARTBEAT = b": hb\n\n"


def event_frame(event: str, event_id: str, data: bytes) -> bytes:
    """One SSE event; ``data`` is single-line JSON, so one ``data:`` line suffices."""
    if b"\n" in data or b"\r" in data:
        # JSON from orjson or the upstream is one line; split defensively so framing holds.
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        payload = b"".join(b"data: " + line + b"\n" for line in lines)
    else:
        payload = b"data: " + data + b"\n"
    return b"event: " + event.encode() + b"\nid: " + event_id.encode() + b"\n" + payload + b"\n"


def named_frame(event: str, data: bytes) -> bytes:
    """An event without an ``id:`` (errors, project membership): ``Last-Event-ID`` stays put."""
    if b"\n" in data or b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\ndata: ")
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def retry_frame(base_ms: int, rng: random.Random | None = None) -> bytes:
    """A ``retry:`` hint between base and twice base, so a fleet does not reconnect in step."""
    r = rng.random() if rng is not None else random.random()
    return b"retry: " + str(int(base_ms + r * base_ms)).encode() + b"\n\n"


def vector_id(versions: list[int]) -> str:
    """The id of a multiplexed stream's event: every resource's version, in request order."""
    return ".".join(str(v) for v in versions)


# ASCII digits only: ``str.isdigit`` accepts "²", which ``int()`` then refuses.
_VERSION = re.compile(r"[0-9]{1,18}")


def parse_vector_id(raw: str | None, size: int) -> list[int] | None:
    """Inverse of ``vector_id``; None when absent, malformed or not for ``size`` resources."""
    if not raw or size < 1 or len(raw) > 20 * size + 2:
        return None  # the length check bounds the work an absurd header can cause
    parts = raw.strip().split(".")
    if len(parts) != size or not all(_VERSION.fullmatch(p) for p in parts):
        return None
    return [int(p) for p in parts]


def with_last_error(body: bytes, last_error: bytes) -> bytes:
    """The body with a ``lastError`` member added (stream events of failed containers only)."""
    stripped = body.rstrip()
    if not last_error or not stripped.endswith(b"}"):
        return body
    inner = stripped[:-1].rstrip()
    sep = b"" if inner.endswith(b"{") else b","
    return inner + sep + b'"lastError":' + last_error + b"}"
