"""Project ownership: a tenant restricted to projects sees only those projects' resources.

Tenants share one Layers key and organization, so the proxy cannot rely on the upstream to keep
them apart. For a tenant (or token) that names projects, every container is checked once
against its record's ``projectId`` and every job against its envelope's ``projectId`` (else its
container's record) before anything else about it is fetched. The lookups are resources of
their own kinds (``CONTAINER_OWNER``, ``JOB_OWNER``): coalesced cluster-wide by the lease,
cached in Redis, charged to the asking tenant's budget share, and read once (final on the first
good answer). A lookup that fails is a 503, never a grant; a resource outside the projects is
the same 404 as a missing one.
"""

from __future__ import annotations

from typing import Protocol

import orjson

from proxy.errors import NotFound, ProxyError, Unavailable
from proxy.ids import canonical_container_id, canonical_project_id
from proxy.resources import CONTAINER_OWNER, JOB, JOB_OWNER, PROGRESS, ResourceRef
from proxy.snapshot import Snapshot

# Known owners kept in memory (a container never changes project); bounded by clearing.
_KNOWN_MAX = 100_000
_RETRY_AFTER_S = "2"


class SnapshotSource(Protocol):
    """What the check needs of ``Watching``."""

    def hit(self, ref: ResourceRef, tenant: str = "-") -> Snapshot | None: ...

    async def snapshot(self, ref: ResourceRef, tenant: str = "-") -> tuple[Snapshot, str]: ...


def not_found(ref: ResourceRef) -> NotFound:
    """The one 404 for "no such resource" and "not yours" alike, so nothing leaks."""
    return NotFound(f"{ref.kind.id_field} {ref.id} was not found.")


class OwnershipCheck:
    """Answers "which project owns this container or job?" and enforces the answer."""

    def __init__(self, source: SnapshotSource) -> None:
        self._source = source
        self._known: dict[str, str] = {}

    async def require(self, ref: ResourceRef, allowed: frozenset[str], tenant: str) -> None:
        """Return when one of ``allowed`` owns ``ref``; raise the missing-resource 404 if not."""
        if not allowed:
            raise not_found(ref)
        project = await self.project_of(ref, tenant)
        if project is None or project not in allowed:
            raise not_found(ref)

    def remember(self, container: ResourceRef, project: str) -> None:
        """Record an owner learned elsewhere (a project's own content list)."""
        self._keep(container.key, project)

    async def project_of(self, ref: ResourceRef, tenant: str) -> str | None:
        """The owning project, or None when the resource does not exist or names no owner."""
        known = self._known.get(ref.key)
        if known is not None:
            return known
        if ref.kind is JOB:
            project = await self._job_project(ref, tenant)
        elif ref.kind is PROGRESS:
            body = await self._lookup(ResourceRef(CONTAINER_OWNER, ref.id, ref.org), tenant)
            project = _project_field(body)
        else:
            raise ValueError(f"no owner lookup for {ref.kind.name}")
        if project is not None:
            self._keep(ref.key, project)
        return project

    async def _job_project(self, ref: ResourceRef, tenant: str) -> str | None:
        body = await self._lookup(ResourceRef(JOB_OWNER, ref.id, ref.org), tenant)
        if body is None:
            return None
        project = _project_field(body)
        if project is not None:
            return project
        raw = body.get("containerId")
        container = canonical_container_id(raw) if isinstance(raw, str) else None
        if container is None:
            return None  # the envelope names no owner: unverifiable, so refused
        return await self.project_of(ResourceRef(PROGRESS, container, ref.org), tenant)

    async def _lookup(self, ref: ResourceRef, tenant: str) -> dict[str, object] | None:
        """The owner record's body; None when the upstream says it does not exist."""
        snap = self._source.hit(ref, tenant)
        if snap is None:
            try:
                snap, _ = await self._source.snapshot(ref, tenant)
            except ProxyError as exc:
                if exc.status < 500:
                    raise
                raise _unverifiable(ref) from None
        if snap.status_code == 404:
            return None
        if not snap.has_body:
            raise _unverifiable(ref)
        body = orjson.loads(snap.body)
        return body if isinstance(body, dict) else None

    def _keep(self, key: str, project: str) -> None:
        if len(self._known) >= _KNOWN_MAX:
            self._known.clear()
        self._known[key] = project


def _project_field(body: dict[str, object] | None) -> str | None:
    raw = body.get("projectId") if body is not None else None
    return canonical_project_id(raw) if isinstance(raw, str) else None


def _unverifiable(ref: ResourceRef) -> Unavailable:
    return Unavailable(
        f"The proxy could not check which project owns {ref.kind.id_field} {ref.id} (the "
        "Layers API or the shared store is not answering); retry shortly.",
        headers={"Retry-After": _RETRY_AFTER_S},
    )
