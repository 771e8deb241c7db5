"""Client-side helpers for integration tests."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

TERMINAL = {"completed", "failed", "canceled"}


@dataclass
class Seen:
    """What one polling client observed."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    last_request_at: float = 0.0
    terminal_seen_wall: float | None = None  # time.time() when the terminal body arrived

    @property
    def final(self) -> dict[str, Any] | None:
        return self.bodies[-1] if self.bodies else None


async def poll_until_terminal(
    session: aiohttp.ClientSession,
    url: str,
    *,
    every_s: float,
    deadline_s: float,
    jitter_s: float = 0.0,
    seen: Seen | None = None,
) -> Seen:
    """Poll with If-None-Match until the body is terminal (or the deadline passes)."""
    seen = seen or Seen()
    etag = ""
    loop_end = time.monotonic() + deadline_s
    if jitter_s:
        await asyncio.sleep(hash(url + str(id(seen))) % 1000 / 1000 * jitter_s)
    while time.monotonic() < loop_end:
        headers = {"If-None-Match": etag} if etag else {}
        seen.last_request_at = time.monotonic()
        async with session.get(url, headers=headers) as resp:
            seen.statuses.append(resp.status)
            if resp.status == 200:
                etag = resp.headers["ETag"]
                body = await resp.json()
                seen.bodies.append(body)
                if body.get("status") in TERMINAL:
                    seen.terminal_seen_wall = time.time()
                    return seen
        await asyncio.sleep(every_s)
    return seen


def gaps(times: list[float]) -> list[float]:
    """Differences between consecutive times."""
    return [b - a for a, b in itertools.pairwise(times)]


async def wait_until(predicate: Any, timeout_s: float, step_s: float = 0.05) -> bool:
    """Poll a condition that no injected clock can bring about (other processes, real I/O)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        await asyncio.sleep(step_s)
    return bool(predicate())
