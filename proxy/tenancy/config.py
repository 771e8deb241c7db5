"""Tenant entries of the config file (``[[tenants]]``), parsed and checked (pure)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.ids import canonical_project_id
from proxy.secret_strength import GENERATE_HINT, weakness

MIN_SECRET_BYTES = 32
_TENANT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_ORG_ID = re.compile(r"org_[A-Za-z0-9_-]{1,64}")
_KNOWN_KEYS = frozenset(
    {
        "id",
        "secrets",
        "allowed_origins",
        "requests_per_second",
        "max_streams",
        "max_watched",
        "weight",
        "organization",
        "projects",
    }
)


@dataclass(frozen=True)
class TenantConfig:
    """One tenant: who it is, how its tokens are signed, and what it may spend."""

    id: str
    secrets: tuple[tuple[str, bytes], ...]  # (kid, secret); tokens name the kid
    allowed_origins: tuple[str, ...] = ()
    requests_per_second: float = 20.0
    max_streams: int = 200
    max_watched: int = 500
    weight: float = 1.0
    organization: str | None = None
    # When set, the tenant may see only these projects' containers and jobs, verified upstream.
    projects: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        # Never show the signing secrets.
        return f"TenantConfig(id={self.id!r}, kids={[k for k, _ in self.secrets]!r})"

    def secret_for(self, kid: str | None) -> bytes | None:
        """The signing secret named ``kid`` (the first one when a token names none)."""
        if kid is None:
            return self.secrets[0][1] if len(self.secrets) == 1 else None
        for name, secret in self.secrets:
            if name == kid:
                return secret
        return None


def _num(where: str, value: Any, *, minimum: float, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: must be a number")
    if integer and not float(value).is_integer():
        raise ValueError(f"{where}: must be a whole number")
    if value < minimum:
        raise ValueError(f"{where}: must be at least {minimum:g}")
    return float(value)


def _secrets(where: str, raw: Any) -> tuple[tuple[str, bytes], ...]:
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{where}.secrets: must be a non-empty list")
    out: list[tuple[str, bytes]] = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            kid, secret = str(i), item
        elif isinstance(item, Mapping) and set(item) <= {"kid", "secret"} and "secret" in item:
            kid, secret = str(item.get("kid", i)), item["secret"]
        else:
            raise ValueError(f"{where}.secrets[{i}]: must be a string or {{kid, secret}}")
        if not isinstance(secret, str) or len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"{where}.secrets[{i}]: too short; use at least {MIN_SECRET_BYTES} random bytes "
                f"(e.g. {GENERATE_HINT})"
            )
        why = weakness(secret)
        if why is not None:
            raise ValueError(f"{where}.secrets[{i}]: refused: the secret {why}")
        if any(k == kid for k, _ in out):
            raise ValueError(f"{where}.secrets[{i}]: duplicate kid {kid!r}")
        out.append((kid, secret.encode()))
    return tuple(out)


def _projects(where: str, raw: Any) -> frozenset[str]:
    if raw is None:
        return frozenset()
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{where}.projects: must be a non-empty list of project ids (prj_...)")
    out = set()
    for item in raw:
        project = canonical_project_id(item) if isinstance(item, str) else None
        if project is None:
            raise ValueError(
                f"{where}.projects: {str(item)[:80]!r} is not a project id "
                "(prj_<uuid> or prj_<26-character ULID>)"
            )
        out.add(project)
    return frozenset(out)


def parse_tenants(raw: Any, *, source: str) -> tuple[TenantConfig, ...]:
    """Parse the ``tenants`` array of tables; the error names the file and the entry."""
    if raw in (None, []):
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise ValueError(f"{source}: tenants must be an array of tables ([[tenants]])")
    tenants: list[TenantConfig] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        where = f"{source}: tenants[{i}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: must be a table")
        unknown = set(entry) - _KNOWN_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        tid = entry.get("id")
        if not isinstance(tid, str) or not _TENANT_ID.fullmatch(tid):
            raise ValueError(f"{where}.id: must be lowercase letters, digits, '-' or '_'")
        where = f"{source}: tenants[{i}] ({tid})"
        if tid in seen:
            raise ValueError(f"{where}: duplicate tenant id {tid!r}")
        seen.add(tid)
        origins = entry.get("allowed_origins", [])
        if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
            raise ValueError(f"{where}.allowed_origins: must be a list of origins")
        for origin in origins:
            if origin == "*" or not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(
                    f"{where}.allowed_origins: {origin!r} is not an exact origin like "
                    "https://app.example.com (no '*', no path)"
                )
        org = entry.get("organization")
        if org is not None and (not isinstance(org, str) or not _ORG_ID.fullmatch(org)):
            raise ValueError(f"{where}.organization: must look like org_...")
        tenants.append(
            TenantConfig(
                id=tid,
                secrets=_secrets(where, entry.get("secrets")),
                allowed_origins=tuple(origins),
                requests_per_second=_num(
                    f"{where}.requests_per_second",
                    entry.get("requests_per_second", 20),
                    minimum=0.1,
                ),
                max_streams=int(
                    _num(
                        f"{where}.max_streams",
                        entry.get("max_streams", 200),
                        minimum=1,
                        integer=True,
                    )
                ),
                max_watched=int(
                    _num(
                        f"{where}.max_watched",
                        entry.get("max_watched", 500),
                        minimum=1,
                        integer=True,
                    )
                ),
                weight=_num(f"{where}.weight", entry.get("weight", 1), minimum=0.01),
                organization=org,
                projects=_projects(where, entry.get("projects")),
            )
        )
    return tuple(tenants)
