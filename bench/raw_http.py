"""Minimal HTTP/1.1 clients on raw asyncio protocols, light enough for 10,000+ connections.

``SseConnection`` reads one event stream (chunked) and records every ``progress`` event with its
arrival time; ``PollConnection`` polls one URL on a keep-alive connection every ``interval_s``
with ``If-None-Match``. Both report into a shared ``Tally``.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import cast

from bench.sources import updated_at_s

_ID = re.compile(rb"^id: (\d+)$", re.MULTILINE)


@dataclass
class Tally:
    """What a worker's connections saw since the last ``reset``."""

    recording: bool = False
    # (container index, version) → arrival times (SSE) or answer times of new values (polls)
    arrivals: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    updated: dict[tuple[int, int], int] = field(default_factory=dict)
    events: int = 0
    heartbeats: int = 0
    ok_200: int = 0
    not_modified: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        """Count a failure (always, recording or not)."""
        self.errors[what] = self.errors.get(what, 0) + 1

    def arrived(self, cidx: int, version: int, updated_s: int | None, t: float) -> None:
        """Record one value reaching one client."""
        if not self.recording:
            return
        key = (cidx, version)
        self.arrivals.setdefault(key, []).append(t)
        if updated_s is not None:
            self.updated.setdefault(key, updated_s)

    def reset(self, recording: bool) -> None:
        """Forget everything seen so far (errors too) and start or stop recording."""
        self.recording = recording
        self.arrivals, self.updated, self.errors = {}, {}, {}
        self.events = self.heartbeats = self.ok_200 = self.not_modified = 0


def _request(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


class SseConnection(asyncio.Protocol):
    """One EventSource-like subscriber."""

    def __init__(self, path: str, cidx: int, tally: Tally) -> None:
        self.path, self.cidx, self.tally = path, cidx, tally
        self.transport: asyncio.Transport | None = None
        self.first_event: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._head: bytes | None = b""  # None once the response head is parsed
        self._raw = b""  # undecoded chunked bytes
        self._events = b""  # decoded stream text not yet split into events
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but they implement it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(_request(self.path, "Accept: text/event-stream\r\n"))

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if self._head is not None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data, self._head = self._head[:end], self._head[end + 4 :], None
            if not head.startswith(b"HTTP/1.1 200"):
                self._fail("status_" + head[9:12].decode(errors="replace"))
                return
        self._raw += data
        self._dechunk()
        while True:
            end = self._events.find(b"\n\n")
            if end < 0:
                return
            event, self._events = self._events[:end], self._events[end + 2 :]
            self._on_event(event, now)

    def _dechunk(self) -> None:
        while True:
            line_end = self._raw.find(b"\r\n")
            if line_end < 0:
                return
            size = int(self._raw[:line_end].split(b";")[0], 16)
            if size == 0:
                self._raw = b""
                return
            start = line_end + 2
            if len(self._raw) < start + size + 2:
                return
            self._events += self._raw[start : start + size]
            self._raw = self._raw[start + size + 2 :]

    def _on_event(self, event: bytes, now: float) -> None:
        if event.startswith(b":"):
            self.tally.heartbeats += 1
            return
        if not event.startswith(b"event: progress"):
            return
        match = _ID.search(event)
        version = int(match.group(1)) if match else -1
        self.tally.events += 1
        self.tally.arrived(self.cidx, version, updated_at_s(event), now)
        if not self.first_event.done():
            self.first_event.set_result(None)

    def _fail(self, what: str) -> None:
        self.tally.error(what)
        if not self.first_event.done():
            self.first_event.set_exception(ConnectionError(what))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.tally.error("stream_closed_by_server")
            if not self.first_event.done():
                self.first_event.set_exception(ConnectionError("closed"))
        self.closed = True

    def close(self) -> None:
        """Hang up (expected, not an error)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class PollConnection(asyncio.Protocol):
    """One polling tab on a keep-alive connection."""

    def __init__(self, path: str, cidx: int, tally: Tally, interval_s: float, phase_s: float):
        self.path, self.cidx, self.tally = path, cidx, tally
        self.interval_s, self.phase_s = interval_s, phase_s
        self.transport: asyncio.Transport | None = None
        self.etag = ""
        self._buf = b""
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but they implement it.
        self.transport = cast(asyncio.Transport, transport)
        self._timer = asyncio.get_running_loop().call_later(self.phase_s, self._send)

    def _send(self) -> None:
        if self.closed or self.transport is None:
            return
        extra = f"If-None-Match: {self.etag}\r\n" if self.etag else ""
        self.transport.write(_request(self.path, extra))

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self._buf[:end].decode("latin-1")
        lines = head.split("\r\n")
        status = int(lines[0][9:12])
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
        length = int(headers.get("content-length", "0")) if status != 304 else 0
        if len(self._buf) < end + 4 + length:
            return
        body, self._buf = self._buf[end + 4 : end + 4 + length], self._buf[end + 4 + length :]
        if status == 200:
            self.tally.ok_200 += 1
            self.etag = headers.get("etag", "")
            # Polls carry no version: the value's updatedAt second names it instead.
            updated = updated_at_s(body)
            self.tally.arrived(self.cidx, updated or -1, updated, now)
        elif status == 304:
            self.tally.not_modified += 1
        else:
            self.tally.error(f"status_{status}")
        self._timer = asyncio.get_running_loop().call_later(self.interval_s, self._send)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.tally.error("poll_connection_lost")
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()

    def close(self) -> None:
        """Hang up (expected, not an error)."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()
