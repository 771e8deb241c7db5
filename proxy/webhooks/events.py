"""What a Layers webhook asks the proxy to refresh (pure).

``job.completed|failed|canceled`` name a job (and maybe its container); ``content.generated`` names
a container. Every other type is valid and ignored: Layers adds event types over time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from proxy.ids import canonical_container_id, canonical_job_id
from proxy.resources import JOB, PROGRESS, ResourceRef

JOB_EVENTS = frozenset({"job.completed", "job.failed", "job.canceled"})
CONTENT_GENERATED = "content.generated"

_EVENT_ID = re.compile(r"evt_[0-9A-Za-z]{26}")
_ORG_ID = re.compile(r"org_[A-Za-z0-9_-]{1,64}")


class InvalidEvent(ValueError):
    """A signed body that does not fit the webhook contract; the message says which field."""


@dataclass(frozen=True, slots=True)
class Event:
    """A verified event reduced to what the proxy acts on."""

    id: str
    type: str
    refs: tuple[ResourceRef, ...]  # what to refresh, in order; empty for ignored types
    created_ms: int | None  # ``createdAt`` on the sender's clock, when present and parseable


def is_event_id(raw: str | None) -> bool:
    """True for ``evt_`` followed by 26 letters or digits."""
    return raw is not None and _EVENT_ID.fullmatch(raw) is not None


def _created_ms(raw: Any) -> int | None:
    if not isinstance(raw, str):
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None  # Layers always says Z; a naive time would be read in our zone
    return int(parsed.timestamp() * 1000)


def _org(data: dict[str, Any]) -> str | None:
    # Child-org firehoses tag each event with the org it belongs to; the watcher of that
    # resource reads it as that org, so the refresh must use the same cache key.
    org = data.get("organizationId")
    if org is None:
        return None
    if not isinstance(org, str) or not _ORG_ID.fullmatch(org):
        raise InvalidEvent("data.organizationId must look like org_...")
    return org


def _container_of(data: dict[str, Any]) -> str | None:
    result = data.get("result")
    raw = result.get("containerId") if isinstance(result, dict) else None
    if raw is None:
        raw = data.get("containerId")
    # The container is a bonus on a job event: a malformed one is dropped, the job still counts.
    return canonical_container_id(raw) if isinstance(raw, str) else None


def parse_event(event_id: str, payload: Any) -> Event:
    """Reduce a decoded webhook body to an ``Event``; raise ``InvalidEvent`` when it is unusable.

    ``event_id`` is the ``X-Layers-Event-Id`` header. The header is not signed, so a body that
    names another id is refused: otherwise a captured delivery could be replayed under fresh ids.
    """
    if not isinstance(payload, dict):
        raise InvalidEvent("The webhook body must be a JSON object.")
    body_id = payload.get("id")
    if body_id is not None and body_id != event_id:
        raise InvalidEvent("The body's id does not match the X-Layers-Event-Id header.")
    event_type = payload.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise InvalidEvent("The webhook body needs a string 'type'.")
    created_ms = _created_ms(payload.get("createdAt"))
    if event_type not in JOB_EVENTS and event_type != CONTENT_GENERATED:
        return Event(event_id, event_type, (), created_ms)
    data = payload.get("data")
    if not isinstance(data, dict):
        raise InvalidEvent(f"A {event_type} event needs a 'data' object.")
    org = _org(data)
    refs: list[ResourceRef] = []
    if event_type in JOB_EVENTS:
        raw_job = data.get("jobId")
        job_id = canonical_job_id(raw_job) if isinstance(raw_job, str) else None
        if job_id is None:
            raise InvalidEvent(f"A {event_type} event needs data.jobId (job_<ULID>).")
        refs.append(ResourceRef(JOB, job_id, org))
        container_id = _container_of(data)
        if container_id is not None:
            refs.append(ResourceRef(PROGRESS, container_id, org))
    else:
        raw_container = data.get("id")
        container_id = (
            canonical_container_id(raw_container) if isinstance(raw_container, str) else None
        )
        if container_id is None:
            raise InvalidEvent("A content.generated event needs data.id (a container id).")
        refs.append(ResourceRef(PROGRESS, container_id, org))
    return Event(event_id, event_type, tuple(refs), created_ms)
