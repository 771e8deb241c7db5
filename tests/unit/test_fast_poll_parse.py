"""Which request heads the fast path takes as a plain poll (the rest go through aiohttp)."""

from __future__ import annotations

import pytest

from proxy.resources import JOB, PROGRESS
from proxy.web.fast_polls import _parse

pytestmark = pytest.mark.timeout(10)

CID = "cnt_3f2b8c1e-9a4d-4e7b-8c21-0a1b2c3d4e5f"
POLL = f"GET /v1/content/{CID}/progress HTTP/1.1\r\nHost: x\r\n".encode()


def test_a_plain_poll_is_parsed_with_the_headers_it_depends_on() -> None:
    poll = _parse(POLL + b'If-None-Match:  "abc" \r\nAUTHORIZATION: Bearer t\r\nOrigin: o\r\n\r\n')
    assert poll is not None
    assert (poll.kind, poll.raw_id, poll.route) == (
        PROGRESS,
        CID,
        "/v1/content/{containerId}/progress",
    )
    assert (poll.if_none_match, poll.auth, poll.origin) == ('"abc"', "Bearer t", "o")
    job = _parse(b"GET /v1/jobs/job_01JABCDEFGHJKMNPQRSTVWXYZ0 HTTP/1.1\r\nhost: y\r\n\r\n")
    assert job is not None and job.kind is JOB and job.route == "/v1/jobs/{jobId}"


@pytest.mark.parametrize(
    "head",
    [
        POLL,  # unfinished
        POLL + b"\r\n" + POLL + b"\r\n",  # two pipelined heads in one read
        POLL.replace(b"GET", b"get") + b"\r\n",
        POLL.replace(b"HTTP/1.1", b"HTTP/1.0") + b"\r\n",
        POLL.replace(b"/progress", b"/progress?x=1") + b"\r\n",
        POLL.replace(b"/progress", b"/progress/stream") + b"\r\n",
        POLL.replace(b"cnt_", b"cnt%5F") + b"\r\n",
        POLL.replace(b"Host: x\r\n", b"") + b"\r\n",  # no Host
        POLL + b"Host: y\r\n\r\n",  # two
        POLL + b"X-Folded: a\r\n b\r\n\r\n",  # obs-fold
        POLL + b"X-Bytes: \xc3\xa9\r\n\r\n",
        POLL + b"X-Ctl: a\x01b\r\n\r\n",
        POLL + b"Bad Name: v\r\n\r\n",
        POLL + b"NoColon\r\n\r\n",
        POLL + b"If-None-Match: a\r\nIf-None-Match: b\r\n\r\n",
        POLL + b"Prefer: wait=5\r\n\r\n",
        POLL + b"Expect: 100-continue\r\n\r\n",
        POLL + b"Content-Length: 0\r\n\r\n",
        POLL + b"Transfer-Encoding: chunked\r\n\r\n",
        POLL + b"Connection: close\r\n\r\n",
        POLL + b"Connection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        POLL.replace(b"\r\n", b"\n") + b"\n",  # bare LF line ends
    ],
)
def test_anything_but_one_plain_head_goes_the_usual_way(head: bytes) -> None:
    assert _parse(head) is None
