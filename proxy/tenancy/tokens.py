"""Capability tokens: short-lived HS256 JWTs that name exactly what their holder may watch.

A tenant's backend mints them with ``mint_token`` (or ``layers-proxy token``); the proxy checks
them with ``verify_token``. The algorithm is pinned, ``exp``/``iat``/``aud``/``tenant`` are
required, the signing secret is looked up by ``kid`` in the tenant's fixed table, and no token
may live longer than an hour.

    from proxy.tenancy.tokens import mint_token
    token = mint_token(tenant="acme", secret=b"...", kid="0", containers=["cnt_..."], ttl_s=600)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import jwt

from proxy.ids import canonical_container_id, canonical_job_id, canonical_project_id
from proxy.tenancy.config import TenantConfig

ALGORITHM = "HS256"
DEFAULT_AUDIENCE = "layers-progress-proxy"
MAX_TTL_S = 3600
MAX_TOKEN_BYTES = 8192
MAX_RESOURCES = 1000
_LEEWAY_S = 5


class TokenError(ValueError):
    """The token is missing, malformed, forged, expired or otherwise unacceptable."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows."""

    tenant: TenantConfig
    containers: frozenset[str]
    jobs: frozenset[str]
    expires_at: float
    # Any container or job of these projects (verified upstream, like a tenant's projects).
    projects: frozenset[str] = frozenset()


def mint_token(
    *,
    tenant: str,
    secret: bytes | str,
    containers: Iterable[str] = (),
    jobs: Iterable[str] = (),
    projects: Iterable[str] = (),
    ttl_s: int = 600,
    kid: str = "0",
    audience: str = DEFAULT_AUDIENCE,
    now: float | None = None,
) -> str:
    """A signed token for ``tenant`` naming the containers, jobs and projects it may watch."""
    if not 1 <= ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl_s must be between 1 and {MAX_TTL_S} seconds")
    cids = _canonical_list(containers, canonical_container_id, "container")
    jids = _canonical_list(jobs, canonical_job_id, "job")
    pids = _canonical_list(projects, canonical_project_id, "project")
    if not cids and not jids and not pids:
        raise ValueError("a token must name at least one container, job or project")
    issued = int(now if now is not None else time.time())
    key = secret.encode() if isinstance(secret, str) else secret
    claims: dict[str, object] = {
        "tenant": tenant,
        "aud": audience,
        "iat": issued,
        "exp": issued + ttl_s,
        "containers": cids,
        "jobs": jids,
    }
    if pids:
        claims["projects"] = pids
    return jwt.encode(
        claims,
        key,
        algorithm=ALGORITHM,
        headers={"kid": kid},
    )


def _canonical_list(raw: Iterable[str], canon: Callable[[str], str | None], what: str) -> list[str]:
    out = []
    for item in raw:
        value = canon(item)
        if value is None:
            raise ValueError(f"not a {what} id: {item!r}")
        out.append(value)
    return out


def _ids(raw: object, canon: object) -> frozenset[str]:
    if raw is None:
        return frozenset()
    if not isinstance(raw, list) or len(raw) > MAX_RESOURCES:
        raise TokenError("resource list malformed")
    out = set()
    for item in raw:
        value = canon(item) if isinstance(item, str) and callable(canon) else None
        if value is None:
            raise TokenError("resource list malformed")
        out.add(value)
    return frozenset(out)


def verify_token(
    token: str,
    tenants: Mapping[str, TenantConfig],
    *,
    audience: str = DEFAULT_AUDIENCE,
    now: float | None = None,
) -> Grant:
    """The grant of a valid token; ``TokenError`` (with a generic message) otherwise."""
    if not token or len(token) > MAX_TOKEN_BYTES:
        raise TokenError("token missing or too large")
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise TokenError("token malformed") from None
    if header.get("alg") != ALGORITHM:
        raise TokenError("token algorithm not accepted")
    claimed = claims.get("tenant")
    tenant = tenants.get(claimed) if isinstance(claimed, str) else None
    kid = header.get("kid")
    if tenant is None or (kid is not None and not isinstance(kid, str)):
        raise TokenError("token not accepted")
    secret = tenant.secret_for(kid)
    if secret is None:
        raise TokenError("token not accepted")
    current = now if now is not None else time.time()
    try:
        verified = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=audience,
            leeway=_LEEWAY_S,
            options={"require": ["exp", "iat", "aud", "tenant"], "verify_iat": False},
        )
    except jwt.PyJWTError:
        raise TokenError("token not accepted") from None
    exp, iat = verified["exp"], verified["iat"]
    if not isinstance(exp, int | float) or not isinstance(iat, int | float):
        raise TokenError("token not accepted")
    if exp - iat > MAX_TTL_S or exp - current > MAX_TTL_S + _LEEWAY_S:
        raise TokenError("token lives too long")
    if exp <= current - _LEEWAY_S:
        raise TokenError("token expired")
    if iat > current + 60:
        raise TokenError("token issued in the future")
    return Grant(
        tenant=tenant,
        containers=_ids(verified.get("containers"), canonical_container_id),
        jobs=_ids(verified.get("jobs"), canonical_job_id),
        expires_at=float(exp),
        projects=_ids(verified.get("projects"), canonical_project_id),
    )
