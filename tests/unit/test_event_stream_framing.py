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
