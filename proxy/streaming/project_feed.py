"""Keeps a project stream's containers in step with the project's state.

A project stream is one ``StreamSession`` (progress events of its containers, latest wins) plus
this listener on the project's own snapshot and on each member: a container that appears in the
project is added to the session and announced (``event: container``), one whose progress turns
terminal is announced again with its final status, and one that falls out of the project's
recent window is removed. Every (re)connect starts from the full current state, so the stream
needs no resumable ids of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import orjson

from proxy.errors import ProxyError
from proxy.project_list import members_with_status
from proxy.resources import PROGRESS, ResourceRef
from proxy.snapshot import Snapshot
from proxy.streaming.ports import Feed
from proxy.streaming.session import StreamSession

CONTAINER_EVENT = "container"


def container_event(container_id: str, status: str) -> bytes:
    """The ``event: container`` data: which container, and its status now."""
    return orjson.dumps({"containerId": container_id, "status": status})


class ProjectFeed:
    """The project side of one project stream (a cache listener; call ``close`` at the end)."""

    __slots__ = (
        "_announced_end",
        "_feed",
        "_members",
        "_now_ms",
        "_project",
        "_session",
        "_tenant",
        "_window_ms",
    )

    def __init__(
        self,
        session: StreamSession,
        feed: Feed,
        project: ResourceRef,
        *,
        tenant: str,
        window_ms: int,
        now_ms: Callable[[], int],
    ) -> None:
        self._session, self._feed, self._project = session, feed, project
        self._tenant, self._window_ms, self._now_ms = tenant, window_ms, now_ms
        self._members: dict[str, ResourceRef] = {}
        self._announced_end: set[str] = set()

    def start(self, shown: Iterable[tuple[ResourceRef, Snapshot | ProxyError, str]]) -> None:
        """Begin with the current members: (ref, first state, status in the project's list)."""
        for ref, first, listed in shown:
            # The cache may already hold a newer state than the first fetch returned (or one
            # after a failed first fetch): announce what the client is about to be sent.
            latest = self._feed.latest(ref.key) or (first if isinstance(first, Snapshot) else None)
            self._join(ref, latest, listed)
            self._session.add(ref, first)
        self._feed.watch(self._project, self._tenant, self)

    def close(self) -> None:
        """Release every subscription this feed took."""
        self._feed.unwatch(self._project, self._tenant, self)
        for ref in self._members.values():
            self._feed.unwatch(ref, self._tenant, self)
        self._members.clear()

    def notify(self, key: str) -> None:
        """The project's state or a member's progress changed."""
        if key == self._project.key:
            self._sync()
            return
        ref = self._members.get(key)
        snap = self._feed.latest(key)
        if ref is not None and snap is not None and snap.terminal and snap.has_body:
            self._announce_end(ref, snap)

    def _sync(self) -> None:
        snap = self._feed.latest(self._project.key)
        if snap is None or not snap.has_body or snap.status_code != 200:
            return  # the project's list failed or vanished: keep what is shown
        wanted: dict[str, tuple[ResourceRef, str]] = {}
        for cid, listed in members_with_status(
            orjson.loads(snap.body), self._now_ms(), self._window_ms
        ):
            ref = ResourceRef(PROGRESS, cid, self._project.org)
            wanted[ref.key] = (ref, listed)
        for key in [k for k in self._members if k not in wanted]:
            ref = self._members.pop(key)
            self._feed.unwatch(ref, self._tenant, self)
            self._session.remove(ref)
        for key, (ref, listed) in wanted.items():
            if key not in self._members:
                self._join(ref, self._feed.latest(key), listed)
                self._session.add(ref)

    def _join(self, ref: ResourceRef, snap: Snapshot | None, listed: str) -> None:
        """Track ``ref`` and announce it, with its own status when its progress is known."""
        self._members[ref.key] = ref
        self._feed.watch(ref, self._tenant, self)
        if snap is not None and snap.has_body and snap.status_code == 200:
            if snap.terminal:
                self._announced_end.add(ref.key)
            self._session.send_event(CONTAINER_EVENT, container_event(ref.id, snap.status))
        else:
            self._session.send_event(CONTAINER_EVENT, container_event(ref.id, listed))

    def _announce_end(self, ref: ResourceRef, snap: Snapshot) -> None:
        if ref.key in self._announced_end:
            return
        self._announced_end.add(ref.key)
        self._session.send_event(CONTAINER_EVENT, container_event(ref.id, snap.status))
