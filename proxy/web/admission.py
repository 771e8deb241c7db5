"""Letting a request watch resources: scope, the tenant's rate, ownership, the watched limit.

Every endpoint that names resources (polls, streams, the batch, project views) goes through
``admit_watchers``, so the order of the checks is the same everywhere: the ids and the token's
scope first (free, no rate spent on a malformed id), then the tenant's request rate once per
request, then the project-ownership lookups side by side, then each resource is noted as
watched, and the request is counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiohttp import web

from proxy.errors import ProxyError
from proxy.resources import ResourceKind, ResourceRef
from proxy.tenancy.access import Access, Caller
from proxy.web import keys

Admitted = ResourceRef | ProxyError


async def admit_watchers(
    request: web.Request,
    caller: Caller,
    wanted: Sequence[tuple[ResourceKind, str]],
    *,
    item_errors: bool = False,
) -> list[Admitted]:
    """Each wanted resource as the caller may watch it, in the order asked.

    400 when an id is malformed, 404 when a resource is not the caller's, 429 over the tenant's
    limits. With ``item_errors`` a resource's own refusal (400/404/429 of ``max_watched``) takes
    its place in the list instead of failing the request; the request rate still fails it.
    """
    app = request.app
    access = app[keys.ACCESS]
    admitted: list[Admitted] = []
    for kind, raw in wanted:
        try:
            admitted.append(access.resource(caller, kind, raw))
        except ProxyError as exc:
            if not item_errors:
                raise
            admitted.append(exc)
    if caller.grant is not None:  # open mode has no tenant limits: skip the calls entirely
        limits = app[keys.LIMITS]
        await limits.admit(caller)
        if caller.checks_owner:  # before anything about the resources is fetched or counted
            admitted = await _owned(access, caller, admitted, item_errors)
        for i, ref in enumerate(admitted):
            if isinstance(ref, ResourceRef):
                try:
                    limits.watch(caller, ref)
                except ProxyError as exc:
                    if not item_errors:
                        raise
                    admitted[i] = exc
    stats = app[keys.STATS]
    stats.client_requests += 1
    stats.tenant_requests[caller.tenant_id] += 1
    return admitted


async def admit_watcher(
    request: web.Request, kind: ResourceKind, raw_id: str, caller: Caller | None = None
) -> tuple[Caller, ResourceRef]:
    """The caller (``caller``, or the request's) and the one resource it may watch, counted."""
    if caller is None:
        caller = request.app[keys.ACCESS].caller(request)
    (ref,) = await admit_watchers(request, caller, ((kind, raw_id),))
    assert isinstance(ref, ResourceRef)  # without item_errors a refusal raises
    return caller, ref


async def _owned(
    access: Access, caller: Caller, admitted: list[Admitted], item_errors: bool
) -> list[Admitted]:
    """The ownership check of every resource, run side by side (one lookup each at most)."""

    async def check(item: Admitted) -> Admitted:
        if isinstance(item, ProxyError):
            return item
        try:
            await access.verify_owner(caller, item)
        except ProxyError as exc:
            return exc
        return item

    if len(admitted) == 1:
        checked = [await check(admitted[0])]
    else:
        checked = list(await asyncio.gather(*(check(item) for item in admitted)))
    if not item_errors:
        for item in checked:
            if isinstance(item, ProxyError):
                raise item
    return checked
