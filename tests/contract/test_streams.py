"""The event streams read frame by frame: what schemathesis' SSE parser drops is checked here.

Its parser keeps events only, so the ``retry:`` hint, heartbeat comments, the end of the stream
and the 204 on a reconnect are read with a small frame reader, and every event's ``data`` is
validated against the document's schema for it.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from proxy.web.openapi import document
from tests.contract.conftest import CONTAINERS, Live

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

READ_TIMEOUT_S = 10.0
UNKNOWN_CONTAINER = "cnt_c0ffee00-0000-4000-8000-0000000000aa"
FAILING_CONTAINER = "cnt_c0ffee00-0000-4000-8000-0000000000bb"


@dataclass
class Frame:
    """One SSE frame: the fields it set and the comments it carried."""

    fields: dict[str, str] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.fields["data"])


async def read_frame(resp: aiohttp.ClientResponse) -> Frame | None:
    """The next frame, or None at the end of the stream (bounded by READ_TIMEOUT_S)."""
    frame = Frame()
    async with asyncio.timeout(READ_TIMEOUT_S):
        while True:
            raw = await resp.content.readline()
            if not raw:
                return None if not frame.fields and not frame.comments else frame
            line = raw.decode().rstrip("\r\n")
            if not line:
                return frame
            if line.startswith(":"):
                frame.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            frame.fields[name] = value.removeprefix(" ")


async def read_to_end(resp: aiohttp.ClientResponse) -> list[Frame]:
    frames = []
    while (frame := await read_frame(resp)) is not None:
        frames.append(frame)
    return frames


def validate_as(name: str, instance: Any) -> None:
    """Validate against ``#/components/schemas/<name>`` of the document, formats included."""
    doc = document()
    root = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    Draft202012Validator(root, format_checker=FormatChecker()).validate(instance)


def assert_retry_first(frame: Frame | None) -> None:
    assert frame is not None and set(frame.fields) == {"retry"}
    assert 3000 <= int(frame.fields["retry"]) <= 6000  # sse_retry_ms, jittered up to twice


async def test_running_stream_retry_event_and_heartbeat(live: Live) -> None:
    """A live stream opens with ``retry:``, then a ``progress`` event, then heartbeats."""
    url = f"{live.url}/v1/content/{CONTAINERS['running']}/progress/stream"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        assert re.fullmatch(r"req_[0-9A-Z]{26}", resp.headers["X-Request-Id"])
        assert_retry_first(await read_frame(resp))
        first = await read_frame(resp)
        assert first is not None and first.fields["event"] == "progress"
        assert re.fullmatch(r"[0-9]{1,18}", first.fields["id"])
        validate_as("ProgressEvent", first.json())
        assert first.json()["status"] == "processing"
        # The heartbeat interval is 0.5 s here, under the 2 s poll cadence.
        while not (frame := await read_frame(resp)) or "hb" not in frame.comments:
            assert frame is not None, "the stream of a running container ended"
            if frame.fields:
                assert frame.fields["event"] == "progress"
                validate_as("ProgressEvent", frame.json())


async def test_failed_container_ends_with_last_error_then_204(live: Live) -> None:
    """A terminal stream sends the final event (with ``lastError``) and ends; a reconnect
    that already has it gets 204, by header or by ``?lastEventId=``."""
    url = f"{live.url}/v1/content/{CONTAINERS['failed']}/progress/stream"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            assert resp.status == 200
            frames = await read_to_end(resp)
        assert_retry_first(frames[0])
        [final] = frames[1:]
        assert final.fields["event"] == "progress"
        body = final.json()
        validate_as("ProgressEvent", body)
        assert body["status"] == "failed" and isinstance(body["lastError"], dict)
        last_id = final.fields["id"]
        async with session.get(url, headers={"Last-Event-ID": last_id}) as resp:
            assert resp.status == 204
        async with session.get(url, params={"lastEventId": last_id}) as resp:
            assert resp.status == 204


async def test_job_stream_sends_the_envelope(live: Live) -> None:
    """``event: job`` carries the job envelope; a completed job's stream ends after it."""
    url = f"{live.url}/v1/jobs/{live.jobs['completed']}/stream"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        frames = await read_to_end(resp)
    [final] = frames[1:]
    assert final.fields["event"] == "job"
    validate_as("Job", final.json())
    assert final.json()["status"] == "completed"


async def test_multiplexed_stream_vector_ids_and_error_events(live: Live) -> None:
    """/v1/stream: one event per resource, dot-separated version ids, ``error`` for unknown."""
    params = {
        "containers": f"{CONTAINERS['completed']},{UNKNOWN_CONTAINER}",
        "jobs": live.jobs["canceled"],
    }
    url = f"{live.url}/v1/stream"
    async with aiohttp.ClientSession() as session, session.get(url, params=params) as resp:
        assert resp.status == 200
        frames = await read_to_end(resp)
    assert_retry_first(frames[0])
    by_event = {f.fields["event"]: f for f in frames[1:]}
    assert sorted(by_event) == ["error", "job", "progress"]
    validate_as("ProgressEvent", by_event["progress"].json())
    validate_as("Job", by_event["job"].json())
    error = by_event["error"].json()
    validate_as("StreamError", error)
    assert error["containerId"] == UNKNOWN_CONTAINER and error["error"]["code"] == "NOT_FOUND"
    for name in ("progress", "job"):
        assert re.fullmatch(r"[0-9]{1,18}\.[0-9]{1,18}\.[0-9]{1,18}", by_event[name].fields["id"])


async def test_upstream_failure_opens_the_stream_with_an_error_event(live: Live) -> None:
    """With Layers failing and nothing cached, a single stream says so in an ``error`` event."""
    live.sim_call("POST", "/_sim/containers", {"id": FAILING_CONTAINER, "stages": [["a", 3600]]})
    live.sim_call("POST", "/_sim/faults", {"kind": "status", "path_contains": FAILING_CONTAINER})
    url = f"{live.url}/v1/content/{FAILING_CONTAINER}/progress/stream"
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            assert resp.status == 200
            assert_retry_first(await read_frame(resp))
            frame = await read_frame(resp)
    finally:
        live.sim_call("DELETE", "/_sim/faults")
    assert frame is not None and frame.fields["event"] == "error"
    error = frame.json()
    validate_as("StreamError", error)
    assert error["error"]["code"] == "UPSTREAM_UNAVAILABLE"
