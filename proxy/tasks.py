"""Background tasks whose death is logged instead of vanishing with an unretrieved exception."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

log = structlog.get_logger("proxy.tasks")


def spawn(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    """Run ``coro`` as a named task; log (class name only) if it ever dies of an exception."""
    task = asyncio.create_task(coro, name=name)

    def _done(t: asyncio.Task[None]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.error("background_task_died", task=name, error=type(t.exception()).__name__)

    task.add_done_callback(_done)
    return task
