"""A project's watched state, derived from its in-flight content list (pure).

The upstream list filtered to in-flight statuses says what runs now; it cannot say what just
ended. So the lease holder keeps, in the cached body itself, the containers that left the list
with the time they left, for at most ``KEEP_ENDED_MS``; readers show those that ended within
their window. Because the derived body is what is cached and published, every replica agrees
on it, and a replica that starts watching late still sees what ended before it came.

The cached body::

    {"projectId": "prj_...", "truncated": false,
     "containers": [{"containerId": "cnt_...", "status": "processing", "endedAt": null},
                    {"containerId": "cnt_...", "status": "ended", "endedAt": 1764550000000}]}
"""

from __future__ import annotations

from typing import Any

from proxy.ids import canonical_container_id

KEEP_ENDED_MS = 3_600_000  # the longest window a reader may ask for
MAX_ENDED = 1000  # ended entries kept at most, newest first
ENDED = "ended"  # the status of an entry that left the in-flight list


def derive(
    previous: dict[str, Any] | None, page: dict[str, Any], project_id: str, now_ms: int
) -> dict[str, Any]:
    """The new project state from the previous one and a validated in-flight list page."""
    running: dict[str, str] = {}
    for item in page.get("items", ()):
        cid = canonical_container_id(item["id"])
        if cid is not None and cid not in running:
            running[cid] = item["status"]
    ended: list[dict[str, Any]] = []
    for entry in (previous or {}).get("containers", ()):
        cid = entry.get("containerId")
        if not isinstance(cid, str) or cid in running:
            continue  # still (or again) in flight: listed below with its current status
        ended_at = entry.get("endedAt")
        if not isinstance(ended_at, int):
            ended_at = now_ms  # it just left the list
        if now_ms - ended_at <= KEEP_ENDED_MS:
            ended.append({"containerId": cid, "status": ENDED, "endedAt": ended_at})
    ended.sort(key=lambda e: e["endedAt"], reverse=True)
    return {
        "projectId": project_id,
        "truncated": bool(page.get("nextCursor")),
        "containers": [
            *(
                {"containerId": cid, "status": status, "endedAt": None}
                for cid, status in running.items()
            ),
            *ended[:MAX_ENDED],
        ],
    }


def members(state: dict[str, Any], now_ms: int, window_ms: int) -> list[tuple[str, int | None]]:
    """``(containerId, endedAt)`` of the containers in flight or ended within ``window_ms``."""
    out = []
    for entry in state.get("containers", ()):
        ended_at = entry.get("endedAt")
        if ended_at is None or now_ms - ended_at <= window_ms:
            out.append((entry["containerId"], ended_at))
    return out


def members_with_status(
    state: dict[str, Any], now_ms: int, window_ms: int
) -> list[tuple[str, str]]:
    """``(containerId, status in the list)`` of the containers a project view shows now.

    Those are ``members``: in flight, or ended within ``window_ms``; an ended one's status is
    ``ENDED``.
    """
    listed = {c["containerId"]: c["status"] for c in state.get("containers", ())}
    return [(cid, listed.get(cid, "")) for cid, _ in members(state, now_ms, window_ms)]
