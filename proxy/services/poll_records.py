"""What a poll writes: the fields of each kind of answer, and the record of a failed one.

Pure functions of the upstream's answer (and the snapshot it answered), so ``polling`` only
decides which one applies.
"""

from __future__ import annotations

from typing import Any

import structlog

from proxy.errors import envelope
from proxy.request_ids import next_request_id
from proxy.resources import ResourceRef
from proxy.snapshot import Snapshot, etag_for
from proxy.upstream.client import Outcome, UpstreamResult

log = structlog.get_logger("proxy.scheduler")

# Distinct (resource, reason) pairs of bad upstream bodies remembered for log-once.
_BAD_LOG_MAX = 10_000


def fields_of_body(
    ref: ResourceRef, result: UpstreamResult, status: str, extra: bytes
) -> dict[str, Any]:
    """A 200: the upstream's bytes exactly, with what the proxy reads from them."""
    parsed = result.parsed
    return {
        "body": result.body,
        "etag": etag_for(result.body),
        "status_code": 200,
        "status": status,
        "stage": ref.kind.stage_of(parsed),
        "terminal": ref.kind.is_terminal(parsed),
        "upstream_etag": result.etag,
        "extra": extra,
    }


def fields_unchanged(snap: Snapshot) -> dict[str, Any]:
    """A 304: the stored body again (its fetch time moves on)."""
    return {
        "body": snap.body,
        "etag": snap.etag,
        "status_code": 200,
        "status": snap.status,
        "stage": snap.stage,
        "terminal": snap.terminal,
        "upstream_etag": snap.upstream_etag,
        "extra": snap.extra,
    }


def fields_not_found(
    ref: ResourceRef, result: UpstreamResult, negative_ttl_ms: int
) -> dict[str, Any]:
    """A 404, negative-cached for a while (the upstream's envelope when it sent one)."""
    body = (
        result.body
        if result.error_code == "NOT_FOUND"
        else envelope("NOT_FOUND", f"{ref.kind.id_field} {ref.id} was not found", next_request_id())
    )
    return {
        "body": body,
        "etag": etag_for(body),
        "status_code": 404,
        "status": "",
        "stage": "",
        "terminal": True,
        "upstream_etag": "",
        "negative_ttl_ms": negative_ttl_ms,
    }


def failure_record(result: UpstreamResult) -> tuple[int, str, str]:
    """(status, code, message) a failed poll is recorded with (what waiting clients get)."""
    outcome = result.outcome
    if outcome is Outcome.RATE_LIMITED:
        return 503, "UPSTREAM_RATE_LIMITED", "upstream 429 (rate limited)"
    if outcome is Outcome.AUTH_REJECTED:
        return 502, "UPSTREAM_AUTH", f"upstream rejected the key ({result.detail})"
    if outcome is Outcome.TIMEOUT:
        return 504, "UPSTREAM_TIMEOUT", result.detail
    if outcome is Outcome.BAD_BODY:
        return 502, "UPSTREAM_UNAVAILABLE", f"upstream sent {result.detail}"
    return 502, "UPSTREAM_UNAVAILABLE", f"upstream {result.detail}"


class BadBodyLog:
    """Logs an upstream 200 that failed validation once per resource and reason."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()

    def note(self, key: str, result: UpstreamResult) -> None:
        """Log it, with a sample, unless this (resource, reason) was logged already."""
        seen = (key, result.detail)
        if seen in self._seen:
            return
        if len(self._seen) >= _BAD_LOG_MAX:
            self._seen.clear()
        self._seen.add(seen)
        log.warning(
            "upstream_bad_body",
            key=key,
            detail=result.detail,
            status=result.status,
            sample=result.sample,
            hint="not cached or forwarded; the last good snapshot is served stale",
        )
