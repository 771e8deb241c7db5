"""Webhook configuration, the events a finished run emits, and the delivery record (pure)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from proxy.simulator.timeline import iso

DeliveryOutcome = Literal["sent", "dropped", "failed"]


@dataclass(frozen=True)
class WebhookConfig:
    """Where and how the simulator delivers webhooks."""

    url: str
    secret: str
    delay_s: float = 0.0
    drop_rate: float = 0.0
    max_retries: int = 3
    retry_backoff_s: float = 0.05

    def __post_init__(self) -> None:
        if not self.url or not self.secret:
            raise ValueError("url and secret are required")
        if self.delay_s < 0 or self.retry_backoff_s < 0 or self.max_retries < 0:
            raise ValueError("delay_s, retry_backoff_s and max_retries must not be negative")
        if not 0.0 <= self.drop_rate <= 1.0:
            raise ValueError("drop_rate must be within [0, 1]")

    def to_json(self) -> dict[str, Any]:
        """Return the config without its secret."""
        return {"url": self.url, "delay_s": self.delay_s, "drop_rate": self.drop_rate}


@dataclass(frozen=True)
class WebhookEvent:
    """One event, serialized once so every retry sends the same bytes."""

    id: str
    type: str
    body: bytes
    created_wall: float

    def payload(self) -> dict[str, Any]:
        """Return the decoded body."""
        decoded: dict[str, Any] = orjson.loads(self.body)
        return decoded


def make_event(
    event_id: str, event_type: str, created_wall: float, data: dict[str, Any]
) -> WebhookEvent:
    """Wrap ``data`` in the ``{id, type, createdAt, data}`` envelope."""
    payload = {"id": event_id, "type": event_type, "createdAt": iso(created_wall), "data": data}
    return WebhookEvent(event_id, event_type, orjson.dumps(payload), created_wall)


@dataclass
class WebhookDelivery:
    """What happened to one event: sent (with the receiver's status), dropped or failed."""

    event_id: str
    type: str
    outcome: DeliveryOutcome
    attempts: int = 0
    http_status: int | None = None
    t_mono: float = 0.0
    payload: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the delivery as control-API JSON."""
        return {
            "eventId": self.event_id,
            "type": self.type,
            "outcome": self.outcome,
            "attempts": self.attempts,
            "httpStatus": self.http_status,
            "t_mono": self.t_mono,
        }


def terminal_event_data(job: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Return the ``job.*`` event type and data for a terminal job envelope."""
    data: dict[str, Any] = {"jobId": job["jobId"], "kind": job["kind"]}
    if job["status"] == "completed":
        data["result"] = job["result"]
    elif job["status"] == "failed":
        data["error"] = job["error"]
    return f"job.{job['status']}", data


def generated_event_data(container: dict[str, Any]) -> dict[str, Any]:
    """Return the ``content.generated`` data for a completed container record."""
    return {
        "id": container["id"],
        "projectId": container["projectId"],
        "assets": container["assets"],
    }


def events_for(
    end_wall: float,
    job: dict[str, Any] | None,
    record: dict[str, Any] | None,
    new_id: Callable[[], str],
) -> list[WebhookEvent]:
    """The webhook events of a run that ended: its job's (``job`` is its final envelope), and
    ``content.generated`` when ``record`` (the container, if this is its current run) completed.
    """
    events = []
    if job is not None:
        event_type, data = terminal_event_data(job)
        events.append(make_event(new_id(), event_type, end_wall, data))
    if record is not None and record["status"] == "completed":
        data = generated_event_data(record)
        events.append(make_event(new_id(), "content.generated", end_wall, data))
    return events
