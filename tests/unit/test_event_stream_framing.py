"""The fast path's chunk framing, shared by every stream of one fan-out."""

from __future__ import annotations

import pytest

from proxy.web.event_stream import frame_chunk

pytestmark = pytest.mark.timeout(5)


def test_a_frame_is_framed_once_per_fan_out_and_correctly() -> None:
    frame = b"event: progress\nid: 7\ndata: {}\n\n"
    chunk = frame_chunk(frame)
    assert chunk == b"%x\r\n" % len(frame) + frame + b"\r\n"
    assert frame_chunk(frame) is chunk  # the next stream of the same fan-out: no new copy
    other = b"event: progress\nid: 8\ndata: {}\n\n"
    assert frame_chunk(other) == b"%x\r\n" % len(other) + other + b"\r\n"
    assert frame_chunk(frame) == chunk  # and back: framed again, the same bytes


def test_an_empty_frame_is_never_the_end_of_the_body() -> None:
    """A zero-length chunk ends a chunked body: an empty frame must write nothing."""
    assert frame_chunk(b"") == b""
    frame_chunk(b"x")
    assert frame_chunk(b"") == b""


def test_a_fan_out_renders_each_snapshot_once_and_every_stream_gets_its_own_version() -> None:
    from proxy.resources import PROGRESS, ResourceRef
    from proxy.snapshot import Snapshot
    from proxy.streaming.frames import single_frame

    ref = ResourceRef(PROGRESS, "cnt_00000000-0000-4000-8000-0000000000a1")
    body = b'{"containerId":"cnt_00000000-0000-4000-8000-0000000000a1"}'
    v1 = Snapshot(key=ref.key, version=1, body=body, status_code=200)
    v2 = Snapshot(key=ref.key, version=2, body=body, status_code=200)
    frame = single_frame(ref, v1)
    assert b"id: 1\n" in frame
    assert single_frame(ref, v1) is frame  # the next stream of the same fan-out
    assert b"id: 2\n" in single_frame(ref, v2)
    assert single_frame(ref, v1) == frame  # an older version still renders as itself


def test_a_fan_out_tells_listeners_in_the_order_they_started_listening() -> None:
    """Streams opened together sit together in memory; the fan-out walks them in that order."""
    from proxy.services.cache import SnapshotCache
    from proxy.snapshot import Snapshot

    heard: list[int] = []

    class _Listener:
        def __init__(self, n: int) -> None:
            self.n = n

        def notify(self, key: str) -> None:
            heard.append(self.n)

    cache = SnapshotCache()
    listeners = [_Listener(n) for n in range(200)]
    for listener in listeners:
        cache.listen("k", listener)
    cache.unlisten("k", listeners[5])
    cache.put(Snapshot(key="k", version=1, body=b"{}", status_code=200))
    assert heard == [n for n in range(200) if n != 5]
