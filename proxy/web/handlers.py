"""Poll handlers: the drop-in GET endpoints, with ETag/304 and long-poll (Prefer: wait)."""

from __future__ import annotations

from aiohttp import web

from proxy.resources import JOB, PROGRESS, ResourceKind, ResourceRef
from proxy.services.watching import HIT, raise_for_error_only
from proxy.snapshot import Snapshot
from proxy.tenancy.ownership import not_found
from proxy.web import keys
from proxy.web.admission import admit_watcher
from proxy.web.headers import etag_matches, prefer_wait_s
from proxy.web.responses import snapshot_response


def servable(snap: Snapshot, ref: ResourceRef) -> Snapshot:
    """The snapshot if it has a 200 body; the right error otherwise."""
    raise_for_error_only(snap, ref)
    if snap.status_code == 404:
        raise not_found(ref)
    return snap


async def _serve(request: web.Request, kind: ResourceKind, raw_id: str) -> web.StreamResponse:
    app = request.app
    settings, watching, stats = app[keys.SETTINGS], app[keys.WATCHING], app[keys.STATS]
    caller, ref = await admit_watcher(request, kind, raw_id)
    cached = watching.hit(ref, caller.tenant_id)
    if cached is not None:
        snap, how = cached, HIT
    else:
        snap, how = await watching.snapshot(ref, caller.tenant_id)
    snap = servable(snap, ref)
    rid = keys.request_id(request) or ""
    if etag_matches(request.headers.get("If-None-Match"), snap.etag):
        wait_s = prefer_wait_s(request.headers.get("Prefer"), max_s=settings.long_poll_max_s)
        extra = None
        if wait_s is not None:
            extra = {"Preference-Applied": f"wait={int(wait_s)}"}
            if not snap.terminal and wait_s > 0:
                stats.long_polls += 1
                newer = await watching.wait_change(ref, snap.version, wait_s, caller.tenant_id)
                if newer is not None:
                    newer = servable(newer, ref)
                    return snapshot_response(
                        newer, HIT, watching.now_ms(), settings, rid, extra_headers=extra
                    )
        stats.not_modified += 1
        return snapshot_response(
            snap, how, watching.now_ms(), settings, rid, not_modified=True, extra_headers=extra
        )
    return snapshot_response(snap, how, watching.now_ms(), settings, rid)


async def get_progress(request: web.Request) -> web.StreamResponse:
    """GET /v1/content/{containerId}/progress: the upstream's body, coalesced and cached."""
    return await _serve(request, PROGRESS, request.match_info["containerId"])


async def get_job(request: web.Request) -> web.StreamResponse:
    """GET /v1/jobs/{jobId}: the upstream's job envelope, coalesced and cached."""
    return await _serve(request, JOB, request.match_info["jobId"])
