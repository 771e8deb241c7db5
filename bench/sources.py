"""Which upstream request produced a value a client saw.

Every progress body carries ``updatedAt``: the simulator's wall clock, to the second, when it
computed the answer. Upstream polls of one container are at least a second apart, so that second
names one request in the simulator's log, whose ``t_wall`` is when "Layers" served the value.
"""

from __future__ import annotations

import calendar
import re
import time
from collections import defaultdict
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

_UPDATED_AT = re.compile(rb'"updatedAt":"([0-9T:\-]+)Z"')
# updatedAt is computed a moment after the request is logged; allow it to cross a second.
_SECOND_SLACK_S = 0.05


@lru_cache(maxsize=65536)
def _epoch(stamp: bytes) -> int:
    return calendar.timegm(time.strptime(stamp.decode(), "%Y-%m-%dT%H:%M:%S"))


def updated_at_s(body: bytes) -> int | None:
    """``updatedAt`` of a progress body (or SSE data line) as Unix seconds."""
    match = _UPDATED_AT.search(body)
    return _epoch(match.group(1)) if match else None


class SourceIndex:
    """Maps (container, updatedAt second) to the simulator request that served it."""

    def __init__(self, requests: Iterable[dict[str, Any]]) -> None:
        self._by: dict[str, dict[int, float]] = defaultdict(dict)
        for r in requests:
            if r.get("status") != 200 or not r.get("resource_id"):
                continue
            slots = self._by[r["resource_id"]]
            second = int(r["t_wall"])
            slots.setdefault(second, r["t_wall"])

    def served_at(self, container_id: str, updated_s: int) -> float | None:
        """``t_wall`` of the request whose answer said ``updated_s``; None if none matches."""
        slots = self._by.get(container_id)
        if slots is None:
            return None
        exact = slots.get(updated_s)
        if exact is not None:
            return exact
        before = slots.get(updated_s - 1)
        if before is not None and updated_s - before <= _SECOND_SLACK_S:
            return before
        return None
