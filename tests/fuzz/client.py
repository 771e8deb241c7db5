"""Sends fuzz cases over raw TCP and reads back whatever HTTP responses come.

A closed or reset connection is a fine answer; what counts is the status line of every response
that does come back, and that every response is well-formed HTTP/1.x.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from tests.fuzz.generator import Case

_STATUS_LINE = re.compile(rb"HTTP/[0-9]\.[0-9] ([0-9]{3})(?: [^\r\n]*)?")


@dataclass
class Outcome:
    """What came back for one case."""

    case: Case
    statuses: list[int] = field(default_factory=list)
    malformed: str | None = None  # the server sent bytes that are not an HTTP response
    timed_out: bool = False
    connect_failed: bool = False


# Once one answer is in, a silence this long means no further answer is coming (the rest of a
# pipelined batch was garbage the server is still waiting to see completed).
IDLE_S = 0.3


class _Reader:
    def __init__(self, reader: asyncio.StreamReader, deadline: float) -> None:
        self.reader = reader
        self.deadline = deadline
        self.buf = bytearray()
        self.eof = False
        self.answered = False

    async def more(self) -> bool:
        """Read some bytes; False at EOF, on reset, past the deadline or after idling."""
        left = self.deadline - time.monotonic()
        if self.eof or left <= 0:
            return False
        try:
            wait_s = min(left, IDLE_S) if self.answered else left
            data = await asyncio.wait_for(self.reader.read(65536), wait_s)
        except (TimeoutError, ConnectionError, OSError):
            self.eof = True
            return False
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    async def until(self, marker: bytes) -> int:
        """Index just past ``marker`` in the buffer, or -1."""
        while (at := self.buf.find(marker)) < 0:
            if not await self.more():
                return -1
        return at + len(marker)

    async def take(self, n: int) -> bool:
        while len(self.buf) < n:
            if not await self.more():
                return False
        del self.buf[:n]
        return True


async def _read_responses(reader: _Reader, out: Outcome) -> None:
    head_request = out.case.data.startswith(b"HEAD ")  # its answer has no body
    while len(out.statuses) < max(1, out.case.requests):
        end = await reader.until(b"\r\n\r\n")
        if end < 0:
            if reader.buf and not out.statuses:
                out.malformed = bytes(reader.buf[:120]).decode("latin-1")
            return
        head = bytes(reader.buf[:end])
        del reader.buf[:end]
        first, _, rest = head.partition(b"\r\n")
        match = _STATUS_LINE.fullmatch(first)
        if match is None:
            out.malformed = first[:120].decode("latin-1")
            return
        status = int(match.group(1))
        fields = {}
        for line in rest.split(b"\r\n"):
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip().lower()
        if 100 <= status < 200:
            continue  # interim (100 Continue): the real answer follows
        out.statuses.append(status)
        reader.answered = True
        if fields.get(b"content-type", b"").startswith(b"text/event-stream"):
            return  # a stream: the status is what matters, hang up
        if head_request and len(out.statuses) == 1:
            continue
        if b"chunked" in fields.get(b"transfer-encoding", b""):
            while True:
                line_end = await reader.until(b"\r\n")
                if line_end < 0:
                    return
                size = int(bytes(reader.buf[: line_end - 2]).split(b";")[0] or b"0", 16)
                del reader.buf[:line_end]
                if not await reader.take(size + 2):
                    return
                if size == 0:
                    break
        elif b"content-length" in fields:
            if not await reader.take(int(fields[b"content-length"])):
                return  # e.g. an answer to HEAD: headers only
        elif status not in (204, 304):
            while await reader.more():
                pass  # delimited by close
            return
        if b"close" in fields.get(b"connection", b""):
            return


async def run_case(host: str, port: int, case: Case, deadline_s: float = 3.0) -> Outcome:
    """Send ``case`` on a fresh connection and parse what comes back."""
    out = Outcome(case)
    deadline = time.monotonic() + deadline_s
    try:
        stream_reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    except (OSError, TimeoutError):
        out.connect_failed = True
        return out
    try:
        try:
            writer.write(case.data)
            if case.half_close:
                writer.write_eof()
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the server may hang up before reading everything: still read its answer
        reader = _Reader(stream_reader, deadline)
        await _read_responses(reader, out)
        out.timed_out = time.monotonic() >= deadline
    finally:
        writer.transport.abort()  # no lingering close: the fuzz run opens many connections
    return out


async def run_all(host: str, port: int, cases: Iterable[Case], concurrency: int) -> list[Outcome]:
    """Every case, ``concurrency`` connections at a time; outcomes in case order."""
    queue = list(cases)
    results: list[Outcome | None] = [None] * len(queue)
    position = 0

    async def worker() -> None:
        nonlocal position
        while position < len(queue):
            i = position
            position += 1
            results[i] = await run_case(host, port, queue[i])

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [r for r in results if r is not None]
