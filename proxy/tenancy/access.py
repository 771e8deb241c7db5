"""Who is calling and what they may watch: the open mode, or tenant capability tokens."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from proxy.errors import InvalidRequest, NotFound, Unauthenticated
from proxy.resources import JOB, PROJECT, ResourceKind, ResourceRef
from proxy.settings import Settings
from proxy.tenancy.config import TenantConfig
from proxy.tenancy.ownership import OwnershipCheck
from proxy.tenancy.tokens import Grant, TokenError, verify_token


@dataclass(frozen=True, slots=True)
class Caller:
    """The caller of one request: a tenant grant, or nobody in particular (open mode)."""

    grant: Grant | None = None

    @property
    def tenant(self) -> TenantConfig | None:
        """The tenant, when tokens are on."""
        return self.grant.tenant if self.grant is not None else None

    @property
    def tenant_id(self) -> str:
        """A label for stats and fairness ('-' in open mode)."""
        return self.grant.tenant.id if self.grant is not None else "-"

    @property
    def org(self) -> str | None:
        """The upstream organization this caller reads as (part of every cache key)."""
        tenant = self.tenant
        return tenant.organization if tenant is not None else None

    @property
    def checks_owner(self) -> bool:
        """True when projects decide what this caller may see (upstream owner lookups)."""
        grant = self.grant
        return grant is not None and bool(grant.tenant.projects or grant.projects)

    def may_watch(self, kind: ResourceKind, resource_id: str) -> bool:
        """False when nothing could allow this resource (always True in open mode).

        True may still need the owner check (``owners_allowed``) when projects are involved.
        """
        grant = self.grant
        if grant is None:
            return True
        if kind is PROJECT:
            tenant_projects = grant.tenant.projects
            return resource_id in grant.projects and (
                not tenant_projects or resource_id in tenant_projects
            )
        named = grant.jobs if kind is JOB else grant.containers
        return resource_id in named or bool(grant.projects)

    def owners_allowed(self, kind: ResourceKind, resource_id: str) -> frozenset[str] | None:
        """The projects one of which must own the resource; None when no check is needed.

        A resource the token names is checked against the tenant's projects (when it has
        any); one it does not name is allowed through the token's projects, within the
        tenant's. An empty set allows nothing.
        """
        grant = self.grant
        if grant is None or kind is PROJECT:
            return None
        tenant_projects = grant.tenant.projects
        named = grant.jobs if kind is JOB else grant.containers
        if resource_id in named:
            return tenant_projects or None
        if tenant_projects:
            return grant.projects & tenant_projects
        return grant.projects


def bearer_token(request: web.Request) -> str:
    """The token from ``Authorization: Bearer`` or, for EventSource, ``?access_token=``."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.query.get("access_token", "")


# Verified tokens kept so a browser's repeat polls skip the HMAC and JSON work (the hot path).
_VERIFIED_CACHE_SIZE = 10_000
# Valid raw ids seen recently → their resource (skips the id regex on repeat polls).
_REF_MEMO_SIZE = 100_000


class Access:
    """Turns a request into a caller and a permitted resource, or a clear 4xx."""

    def __init__(self, settings: Settings, wall_clock: Callable[[], float] = time.time) -> None:
        self.open = settings.auth_mode == "none"
        self._tenants = {t.id: t for t in settings.tenants}
        self._audience = settings.token_audience
        self._open_caller = Caller()
        self._wall = wall_clock
        # Keyed by the exact token string, so only a byte-identical token can hit; expiry is
        # re-checked on every hit. Failures are never cached.
        self._verified: OrderedDict[str, Caller] = OrderedDict()
        self._refs: dict[tuple[str, str, str | None], ResourceRef] = {}
        # Set by the composition root once the services exist (owner lookups fetch upstream).
        self.owners: OwnershipCheck | None = None

    def tenant(self, tenant_id: str) -> TenantConfig | None:
        """A configured tenant by id."""
        return self._tenants.get(tenant_id)

    def caller(self, request: web.Request) -> Caller:
        """The caller; ``Unauthenticated`` when tokens are on and the token is not good."""
        if self.open:
            return self._open_caller
        return self.caller_for(bearer_token(request))

    def caller_for(self, token: str) -> Caller:
        """The caller holding ``token`` (tokens mode); ``Unauthenticated`` when it is not good."""
        if not token:
            raise Unauthenticated(
                "A capability token is required: send 'Authorization: Bearer <token>' "
                "(or ?access_token=<token> for EventSource)."
            )
        cached = self._verified.get(token)
        if cached is not None and cached.grant is not None:
            if cached.grant.expires_at > self._wall():
                return cached
            del self._verified[token]
        try:
            grant = verify_token(token, self._tenants, audience=self._audience)
        except TokenError:
            # One message for every reason, so a prober learns nothing about secrets or tenants.
            raise Unauthenticated("The capability token is invalid or expired.") from None
        caller = Caller(grant)
        self._verified[token] = caller
        if len(self._verified) > _VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)  # oldest first: a bounded cache, not an LRU scan
        return caller

    async def permit(self, caller: Caller, kind: ResourceKind, raw_id: str) -> ResourceRef:
        """``resource``, then the project-ownership check when projects decide (else free)."""
        ref = self.resource(caller, kind, raw_id)
        if caller.checks_owner:
            await self.verify_owner(caller, ref)
        return ref

    async def verify_owner(self, caller: Caller, ref: ResourceRef) -> None:
        """404 (as for a missing resource) unless one of the caller's projects owns ``ref``."""
        allowed = caller.owners_allowed(ref.kind, ref.id)
        if allowed is None:
            return
        if self.owners is None:
            raise RuntimeError("Access.owners is not set")
        await self.owners.require(ref, allowed, caller.tenant_id)

    def resource(self, caller: Caller, kind: ResourceKind, raw_id: str) -> ResourceRef:
        """The canonical resource for ``raw_id``; 400 when malformed, 404 when not the caller's."""
        org = caller.org
        memo_key = (kind.name, raw_id, org)
        ref = self._refs.get(memo_key)
        if ref is not None and caller.may_watch(kind, ref.id):
            return ref  # valid ids only are memoised, so this skips the regex on repeat polls
        rid = kind.canonical_id(raw_id)
        if rid is None:
            raise InvalidRequest(
                f"{kind.id_field} must be {kind.id_hint}.",
                details={"field": kind.id_field, "value": raw_id[:80]},
            )
        if not caller.may_watch(kind, rid):
            # Identical to an unknown resource: existence must not leak across tenants.
            raise NotFound(f"{kind.id_field} {rid} was not found.")
        ref = ResourceRef(kind, rid, org)
        if len(self._refs) >= _REF_MEMO_SIZE:
            self._refs.clear()
        self._refs[memo_key] = ref
        return ref
