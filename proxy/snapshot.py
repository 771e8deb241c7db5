"""The snapshot record: the latest known state of one resource, as stored and as served."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def etag_for(body: bytes) -> str:
    """A strong ETag from the body bytes, identical on every replica."""
    return '"' + hashlib.blake2b(body, digest_size=10).hexdigest() + '"'


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the proxy knows about a resource.

    ``body`` is the upstream's bytes exactly (the drop-in promise). A record with no body is an
    error-only record: the first fetch failed and waiting clients get ``error_status``.
    """

    key: str
    version: int = 0
    body: bytes = b""
    etag: str = ""
    status_code: int = 0  # upstream HTTP status of ``body``: 200, or 404 for a negative entry
    status: str = ""
    stage: str = ""
    stage_since_ms: int = 0
    fetched_ms: int = 0  # Redis wall clock of the last upstream answer that confirmed ``body``
    terminal: bool = False
    error: str = ""  # why the last poll failed ('' when it succeeded)
    error_status: int = 0
    error_code: str = ""
    error_ms: int = 0
    upstream_etag: str = ""
    expires_ms: int = 0  # 0 = no expiry (negative entries expire)
    extra: bytes = b""  # kind-specific side data (a failed container's lastError)

    @property
    def has_body(self) -> bool:
        """True when there is something to serve (a 200 or a cached 404)."""
        return bool(self.body)

    @staticmethod
    def from_fields(key: str, raw: dict[bytes, bytes]) -> Snapshot | None:
        """Parse a Redis hash (None when empty)."""
        if not raw:
            return None

        def s(name: str) -> str:
            return raw.get(name.encode(), b"").decode()

        def i(name: str) -> int:
            value = raw.get(name.encode())
            return int(value) if value else 0

        return Snapshot(
            key=key,
            version=i("version"),
            body=raw.get(b"body", b""),
            etag=s("etag"),
            status_code=i("status_code"),
            status=s("status"),
            stage=s("stage"),
            stage_since_ms=i("stage_since_ms"),
            fetched_ms=i("fetched_ms"),
            terminal=i("terminal") == 1,
            error=s("error"),
            error_status=i("error_status"),
            error_code=s("error_code"),
            error_ms=i("error_ms"),
            upstream_etag=s("upstream_etag"),
            expires_ms=i("expires_ms"),
            extra=raw.get(b"extra", b""),
        )
