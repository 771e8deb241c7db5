"""Every open stream on this replica: one heartbeat ticker, one expiry timer, close on shutdown.

Shared rather than per stream: with 10,000 streams, a timer per stream per wait was most of the
cost of a fan-out. Token expiries sit in one heap behind one timer set for the earliest.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol

import structlog

log = structlog.get_logger("proxy.streams")

# The reconnect hint of the final frame on shutdown: short, jittered up to twice this.
SHUTDOWN_RETRY_MS = 500
# Ended streams stay in the expiry heap until their exp passes; rebuild it when they dominate.
_HEAP_SLACK = 64


class Member(Protocol):
    """What the hub needs of a stream (``StreamSession`` is one)."""

    @property
    def last_write(self) -> float: ...  # loop time of the last write

    @property
    def expires_at(self) -> float | None: ...  # wall clock; None: never

    def heartbeat(self) -> None: ...

    def expire(self) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class StreamHub:
    """The room every stream of this replica is in.

    ``wall`` is the clock token expiries are compared with: the one tokens are verified against.
    """

    def __init__(self, heartbeat_s: float, wall: Callable[[], float] = time.time) -> None:
        self.heartbeat_s = heartbeat_s
        self.wall = wall
        self.members: set[Member] = set()
        self.closing = False
        self.shutdown_retry_ms = SHUTDOWN_RETRY_MS
        self._drained: asyncio.Event | None = None
        self._expiries: list[tuple[float, int, Member]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    @property
    def open_count(self) -> int:
        """Streams open now."""
        return len(self.members)

    def add(self, member: Member) -> None:
        """Track an open stream; during shutdown it is told to close at once."""
        self.members.add(member)
        if self.closing:
            member.close()
        expires_at = member.expires_at
        if expires_at is not None:
            heapq.heappush(self._expiries, (expires_at, next(self._order), member))
            self._arm()

    def discard(self, member: Member) -> None:
        """Forget a stream that ended."""
        self.members.discard(member)
        if len(self._expiries) > 2 * len(self.members) + _HEAP_SLACK:
            self._expiries = [e for e in self._expiries if e[2] in self.members]
            heapq.heapify(self._expiries)
        if not self.members:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._drained is not None:
                self._drained.set()

    def expiry_backlog(self) -> int:
        """Entries in the expiry heap (ended streams included until pruned)."""
        return len(self._expiries)

    def expire_due(self, now: float | None = None) -> int:
        """Tell every stream whose token expired by ``now`` (wall clock); how many were told."""
        now = self.wall() if now is None else now
        told = 0
        while self._expiries and self._expiries[0][0] <= now:
            _, _, member = heapq.heappop(self._expiries)
            if member in self.members:
                member.expire()
                told += 1
        self._arm()
        return told

    def _arm(self) -> None:
        """Keep one timer set for the earliest expiry of an open stream."""
        heap = self._expiries
        while heap and heap[0][2] not in self.members:
            heapq.heappop(heap)
        if not heap:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        at = heap[0][0]
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        delay = max(0.0, at - self.wall())
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)
        self._timer_at = at

    def _on_timer(self) -> None:
        self._timer = None
        self.expire_due()

    def tick(self, now: float) -> None:
        """Ask streams quiet since ``now - heartbeat_s`` (loop time) for a heartbeat."""
        due = now - self.heartbeat_s
        for member in self.members:
            if member.last_write <= due:
                member.heartbeat()
        if self._expiries:
            self.expire_due()  # a safety net for a wall clock that jumped past the timer

    async def run(self) -> None:
        """The heartbeat ticker (cancel to stop)."""
        loop = asyncio.get_running_loop()
        tick_s = min(1.0, self.heartbeat_s / 2)
        try:
            while True:
                await asyncio.sleep(tick_s)
                self.tick(loop.time())
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    async def close_all(self, retry_ms: int = 0, timeout_s: float = 1.0) -> int:
        """End every stream with a jittered ``retry:`` frame; abort what is left after timeout_s.

        Returns how many streams were open. Streams that open later are closed as they open.
        """
        self.closing = True
        if retry_ms > 0:
            self.shutdown_retry_ms = retry_ms
        count = len(self.members)
        self._drained = asyncio.Event()
        if not self.members:
            return 0
        for member in list(self.members):
            member.close()
        try:
            async with asyncio.timeout(timeout_s):
                await self._drained.wait()
        except TimeoutError:
            # Readers that stopped reading cannot take the frame; free their sockets anyway.
            for member in list(self.members):
                member.abort()
            log.info("streams_aborted", count=len(self.members))
        return count
