"""Project views for list pages: ``GET /v1/projects/{projectId}/progress`` (and its stream).

The project's in-flight containers come from its content list, a resource of its own (polled
slowly while somebody watches, through the same lease, floor and budget as every other); each
container's progress is the usual cached snapshot. The answer holds the containers in flight
plus those that ended within ``project_recent_s``.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from proxy.project_list import members_with_status
from proxy.resources import PROGRESS, PROJECT, ResourceRef
from proxy.streaming.project_feed import ProjectFeed
from proxy.tenancy.access import Caller
from proxy.web import keys
from proxy.web.admission import admit_watcher
from proxy.web.batch import collect_items, items_response
from proxy.web.event_stream import open_stream
from proxy.web.handlers import servable
from proxy.web.streams import first_states, new_session, stream_caller


async def watched_project(
    request: web.Request, caller: Caller | None = None
) -> tuple[Caller, ResourceRef]:
    """The caller and the project it may watch (400 malformed, 404 not its own), counted."""
    return await admit_watcher(request, PROJECT, request.match_info["projectId"], caller)


async def project_members(
    request: web.Request, caller: Caller, project: ResourceRef
) -> list[tuple[ResourceRef, str]]:
    """The project's containers to show now (in flight, or ended within the window), with
    their status in the project's list."""
    app = request.app
    watching, settings = app[keys.WATCHING], app[keys.SETTINGS]
    snap, _ = await watching.snapshot(project, caller.tenant_id)
    state = orjson.loads(servable(snap, project).body)
    owners = app[keys.ACCESS].owners
    out = []
    window_ms = int(settings.project_recent_s * 1000)
    for cid, listed in members_with_status(state, watching.now_ms(), window_ms):
        ref = ResourceRef(PROGRESS, cid, project.org)
        if owners is not None:
            owners.remember(ref, project.id)  # the project's own list says so: no lookup
        out.append((ref, listed))
    return out


async def get_project_progress(request: web.Request) -> web.StreamResponse:
    """GET /v1/projects/{projectId}/progress: every shown container's progress body."""
    app = request.app
    caller, project = await watched_project(request)
    shown = await project_members(request, caller, project)
    items = await collect_items(
        app[keys.WATCHING], caller.tenant_id, [(ref.id, ref) for ref, _ in shown]
    )
    head = orjson.dumps(project.id)
    return items_response(
        request, b'{"projectId":' + head + b',"items":[' + b",".join(items) + b"]}"
    )


async def stream_project(request: web.Request) -> web.StreamResponse:
    """GET /v1/projects/{projectId}/stream: containers appearing and ending, and their progress.

    The stream does not end by itself (a project goes on); every connect starts with an
    ``event: container`` and the progress of each current member, so a reconnect simply
    replaces what the client shows.
    """
    app = request.app
    settings, watching = app[keys.SETTINGS], app[keys.WATCHING]
    caller, project = await watched_project(request, stream_caller(request))
    shown = await project_members(request, caller, project)
    refs = [ref for ref, _ in shown]
    first = await first_states(request, refs, caller.tenant_id)
    session = new_session(request, caller, single=False, end_when_done=False)
    feed = ProjectFeed(
        session,
        watching,
        project,
        tenant=caller.tenant_id,
        window_ms=int(settings.project_recent_s * 1000),
        now_ms=watching.now_ms,
    )
    hold = app[keys.LIMITS].stream(caller, [project])
    await hold.take()
    try:
        feed.start((ref, state, listed) for (ref, listed), state in zip(shown, first, strict=True))
    except BaseException:
        feed.close()
        await hold.release()
        raise
    return await open_stream(request, session, hold, on_close=feed.close)
