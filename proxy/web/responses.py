"""Turning snapshots and errors into HTTP responses (the only place that maps errors to HTTP)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from proxy.cadence import snapshot_interval_s
from proxy.errors import ProxyError, envelope
from proxy.settings import Settings
from proxy.snapshot import Snapshot
from proxy.web.headers import cache_status

JSON = "application/json"


def error_response(
    status: int,
    code: str,
    message: str,
    request_id: str,
    *,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """An error in the upstream's envelope shape."""
    return web.Response(
        status=status,
        body=envelope(code, message, request_id, details),
        content_type=JSON,
        headers={"X-Request-Id": request_id, "Cache-Control": "no-store", **(headers or {})},
    )


def proxy_error_response(exc: ProxyError, request_id: str) -> web.Response:
    """The response for a ``ProxyError``."""
    return error_response(
        exc.status, exc.code, exc.message, request_id, details=exc.details, headers=exc.headers
    )


def is_stale(snap: Snapshot, now_ms: int, settings: Settings) -> bool:
    """True when the snapshot is older than it should be, or its last refresh failed."""
    if snap.error:
        return True
    if snap.terminal:
        return False
    return now_ms - snap.fetched_ms > settings.stale_after_s * 1000


def age_s(snap: Snapshot, now_ms: int) -> int:
    """Whole seconds since the upstream last confirmed the snapshot."""
    return max(0, (now_ms - snap.fetched_ms) // 1000)


def poll_hint_ms(snap: Snapshot, settings: Settings) -> int:
    """How often a polling client should come back (the cadence the proxy itself follows)."""
    interval = snapshot_interval_s(snap, settings.cadence)
    return int((interval or settings.slow_interval_s) * 1000)


# How long a shared cache in front (a CDN, an nginx microcache) may serve a stale answer while
# this proxy cannot be reached.
STALE_IF_ERROR_S = 60


def cache_control(snap: Snapshot, hint_ms: int, settings: Settings) -> str:
    """Open mode lets a shared cache keep a good answer for one cadence interval.

    The cache counts the ``Age`` we send against ``max-age``, so it refreshes when the proxy
    polls upstream next; its refreshes keep the resource watched here, so coalescing and
    interest are unchanged. Token answers differ per caller and errors must not stick: those
    stay ``no-cache``.
    """
    if settings.auth_mode != "none" or snap.status_code not in (0, 200) or not snap.has_body:
        return "no-cache"
    max_age = max(1, hint_ms // 1000)
    return f"max-age={max_age}, stale-while-revalidate={max_age}, stale-if-error={STALE_IF_ERROR_S}"


# The headers of a snapshot that do not change between requests, built once per snapshot (the
# hot path copies them and adds Age, Cache-Status and the request id). Bounded by clearing: a
# miss only costs one rebuild.
_FIXED: dict[str, tuple[Snapshot, dict[str, str]]] = {}
_FIXED_MAX = 50_000
_FRESH_HIT = cache_status("hit", stale=False, age_s=0)


def _fixed_headers(snap: Snapshot, settings: Settings) -> dict[str, str]:
    entry = _FIXED.get(snap.key)
    if entry is not None and entry[0] is snap:
        return entry[1]
    hint_ms = poll_hint_ms(snap, settings)
    fixed = {
        "ETag": snap.etag,
        "Cache-Control": cache_control(snap, hint_ms, settings),
        "X-Poll-Interval-Ms": str(hint_ms),
    }
    if len(_FIXED) >= _FIXED_MAX:
        _FIXED.clear()
    _FIXED[snap.key] = (snap, fixed)
    return fixed


def snapshot_headers(
    snap: Snapshot, how: str, now_ms: int, settings: Settings, request_id: str
) -> dict[str, str]:
    """ETag, Age, Cache-Status and friends for a snapshot answer."""
    headers = dict(_fixed_headers(snap, settings))
    age = age_s(snap, now_ms)
    headers["Age"] = str(age)
    stale = is_stale(snap, now_ms, settings)
    headers["Cache-Status"] = (
        _FRESH_HIT if how == "hit" and not stale else cache_status(how, stale=stale, age_s=age)
    )
    headers["X-Request-Id"] = request_id
    return headers


def snapshot_response(
    snap: Snapshot,
    how: str,
    now_ms: int,
    settings: Settings,
    request_id: str,
    *,
    not_modified: bool = False,
    extra_headers: Mapping[str, str] | None = None,
) -> web.Response:
    """200 (or the cached 404) with the upstream's bytes, or 304 when the client has them."""
    headers = snapshot_headers(snap, how, now_ms, settings, request_id)
    if extra_headers:
        headers.update(extra_headers)
    if not_modified:
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = JSON
    return web.Response(status=snap.status_code or 200, body=snap.body, headers=headers)
