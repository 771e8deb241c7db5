"""The bytes of stream events: snapshots, per-resource errors and the token's end."""

from __future__ import annotations

import orjson

from proxy.errors import ProxyError, TokenExpired, error_object
from proxy.resources import ResourceRef
from proxy.snapshot import Snapshot
from proxy.streaming.sse import event_frame, named_frame, with_last_error

EXPIRED_MESSAGE = "The capability token expired; fetch a new one and reconnect."

# One rendered frame per (resource, version) for single-resource streams: every subscriber of a
# resource gets the same bytes, so render them once. Bounded by clearing.
_FRAMES: dict[tuple[str, int], bytes] = {}
_FRAMES_MAX = 10_000


def snapshot_frame(ref: ResourceRef, snap: Snapshot, event_id: str) -> bytes:
    """``event: progress|job``, the body as data (a failed container's with its lastError)."""
    body = snap.body
    if snap.extra and snap.status == "failed":
        body = with_last_error(body, snap.extra)
    return event_frame(ref.kind.event, event_id, body)


class _SingleFrames:
    """``single_frame``'s memo: the last snapshot's frame by identity, since a fan-out asks for
    the same snapshot's frame once per stream in a row, then the rest by (resource, version)."""

    __slots__ = ("frame", "snap")

    def __init__(self) -> None:
        self.snap: Snapshot | None = None
        self.frame = b""

    def __call__(self, ref: ResourceRef, snap: Snapshot) -> bytes:
        if snap is self.snap:
            return self.frame
        frame = _FRAMES.get((snap.key, snap.version))
        if frame is None:
            frame = snapshot_frame(ref, snap, str(snap.version))
            if len(_FRAMES) >= _FRAMES_MAX:
                _FRAMES.clear()
            _FRAMES[(snap.key, snap.version)] = frame
        self.snap, self.frame = snap, frame
        return frame


# ``snapshot_frame`` with the version as id, rendered once per (resource, version).
single_frame = _SingleFrames()


def error_frame(ref: ResourceRef, exc: ProxyError, request_id: str) -> bytes:
    """``event: error`` about one resource: its id and the error envelope."""
    error = error_object(exc.code, exc.message, request_id, exc.details)
    return named_frame("error", orjson.dumps({ref.kind.id_field: ref.id, "error": error}))


def expired_frame(request_id: str) -> bytes:
    """The last frame of a stream whose token reached its exp."""
    error = {"code": TokenExpired.code, "message": EXPIRED_MESSAGE, "requestId": request_id}
    return named_frame("error", orjson.dumps({"error": error}))
