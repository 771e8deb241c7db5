"""``GET /v1/projects/:projectId/content``: a project's containers, newest first, paginated.

Filters as documented: ``status`` (repeatable), ``cursor`` (opaque) and ``limit`` (default 25,
at most 200). The list item shape is the documented one, with the fields the simulator knows.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from proxy.simulator.state import SimulatorState
from proxy.simulator.timeline import iso, plan_of, status_at

DEFAULT_LIMIT = 25
MAX_LIMIT = 200


class ListingError(ValueError):
    """A malformed filter: answered as 400 VALIDATION_ERROR."""


def _offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor.encode() + b"==").decode()
        if not text.startswith("o:"):
            raise ValueError(cursor)
        return max(0, int(text[2:]))
    except ValueError:
        raise ListingError("cursor is not one this API returned") from None


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ListingError(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def project_content(
    state: SimulatorState,
    project_id: str,
    org: str | None,
    *,
    statuses: Sequence[str] = (),
    cursor: str | None = None,
    limit: str | None = None,
) -> dict[str, Any] | None:
    """The page, or None when no container of this org belongs to ``project_id``."""
    size, start = _limit(limit), _offset(cursor)
    members = [
        c
        for c in state.containers.values()
        if c.project_id == project_id and (org is None or c.org == org)
    ]
    if not members:
        return None
    items = []
    for container in sorted(members, key=lambda c: (c.created_wall, c.id), reverse=True):
        run = container.run
        elapsed = state.elapsed(run)
        status = status_at(run.script, elapsed)
        if statuses and status not in statuses:
            continue
        plan = plan_of(run.script)
        done = status in ("completed", "failed", "canceled")
        items.append(
            {
                "id": container.id,
                "status": status,
                "format": "ugc-remix",
                "caption": None,
                "approvalStatus": "not_required",
                "createdAt": iso(container.created_wall),
                "completedAt": iso(run.started_wall + plan.end_s) if done else None,
                "primaryAsset": None,
            }
        )
    page = items[start : start + size]
    more = start + size < len(items)
    return {"items": page, "nextCursor": _cursor(start + size) if more else None}
