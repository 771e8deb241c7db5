"""Watched resources as data: container progress and jobs are two rows of one table.

Everything that differs between the kinds (path, id pattern, terminal test, stage extraction,
whether the upstream speaks ETag) lives here, so the poller, cache and handlers have no
per-kind code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.cadence import is_terminal
from proxy.ids import canonical_container_id, canonical_job_id


@dataclass(frozen=True)
class ResourceKind:
    """What the proxy needs to know to watch one kind of upstream resource."""

    name: str
    event: str  # SSE event name
    path_template: str  # upstream path, ``{id}`` replaced by the canonical id
    id_field: str  # the body field naming the resource
    canonical_id: Callable[[str], str | None]
    id_hint: str  # how a valid id looks, for error messages
    send_if_none_match: bool  # upstream documented as ETag-aware
    terminal_is_permanent: bool  # never revalidate a terminal snapshot

    def upstream_path(self, resource_id: str) -> str:
        """The upstream path for ``resource_id`` (already canonical)."""
        return self.path_template.format(id=resource_id)

    def status_of(self, body: dict[str, Any]) -> str:
        """The body's status string ('' when missing)."""
        status = body.get("status")
        return status if isinstance(status, str) else ""

    def stage_of(self, body: dict[str, Any]) -> str:
        """The stage string, an open set of names ('' when missing)."""
        stage = body.get("stage")
        return stage if isinstance(stage, str) else ""

    def is_terminal(self, body: dict[str, Any]) -> bool:
        """True when no further change is expected."""
        return is_terminal(self.status_of(body))

    def looks_valid(self, body: Any) -> bool:
        """True when ``body`` is a plausible answer (an object with a string status)."""
        return isinstance(body, dict) and isinstance(body.get("status"), str)


PROGRESS = ResourceKind(
    name="progress",
    event="progress",
    path_template="/v1/content/{id}/progress",
    id_field="containerId",
    canonical_id=canonical_container_id,
    id_hint="a UUID, cnt_<uuid> or cnt_<26-character ULID>",
    send_if_none_match=False,
    # Layers can regenerate a container in place, so a terminal container can change again.
    terminal_is_permanent=False,
)

JOB = ResourceKind(
    name="job",
    event="job",
    path_template="/v1/jobs/{id}",
    id_field="jobId",
    canonical_id=canonical_job_id,
    id_hint="job_<26-character ULID>",
    send_if_none_match=True,
    terminal_is_permanent=True,  # documented: terminal job states never change
)

KINDS: dict[str, ResourceKind] = {k.name: k for k in (PROGRESS, JOB)}


@dataclass(frozen=True, slots=True)
class ResourceRef:
    """One watched resource: its kind, canonical id and the upstream organization it is read as."""

    kind: ResourceKind
    id: str
    org: str | None = None

    @property
    def key(self) -> str:
        """The cluster-wide name of this resource (cache key, lease name, channel payload)."""
        return f"{self.kind.name}:{self.org or '-'}:{self.id}"

    @staticmethod
    def from_key(key: str) -> ResourceRef:
        """Inverse of ``key``."""
        kind, org, rid = key.split(":", 2)
        return ResourceRef(KINDS[kind], rid, None if org == "-" else org)
