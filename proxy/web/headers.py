"""Header grammar the edge needs (pure): If-None-Match, Prefer: wait, Cache-Status."""

from __future__ import annotations

import re

_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d{1,6})\"?", re.IGNORECASE)

CACHE_NAME = "layers-proxy"


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison of ``If-None-Match`` against our strong ``etag``."""
    if not if_none_match or not etag:
        return False
    value = if_none_match.strip()
    if value == "*":
        return True
    for candidate in value.split(","):
        tag = candidate.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False


def prefer_wait_s(prefer: str | None, *, max_s: float) -> float | None:
    """Seconds from ``Prefer: wait=N`` (RFC 7240), capped at ``max_s``; None when absent."""
    if not prefer:
        return None
    match = _PREFER_WAIT.search(prefer)
    if match is None:
        return None
    return min(float(match.group(1)), max_s)


def cache_status(how: str, *, stale: bool, age_s: int, fwd_status: int = 200) -> str:
    """An RFC 9211 ``Cache-Status`` value for a hit, a fetch we made, or a collapsed wait."""
    if how == "hit":
        if stale:
            return f"{CACHE_NAME}; hit; ttl={-max(1, age_s)}; detail=stale"
        return f"{CACHE_NAME}; hit"
    if how == "collapsed":
        return f"{CACHE_NAME}; fwd=miss; fwd-status={fwd_status}; collapsed"
    return f"{CACHE_NAME}; fwd=miss; fwd-status={fwd_status}; stored"
