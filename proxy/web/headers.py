"""Header grammar the edge needs (pure): If-None-Match, Prefer: wait, Last-Event-ID, Expect.

Every parser here is strict and total: ASCII grammar only (``str.isdigit`` and ``\\d`` accept
Unicode digits such as ``²`` that ``int()`` then refuses), bounded work on absurd values, and
``None`` instead of an exception for anything it does not understand.
"""

from __future__ import annotations

import re

# RFC 7240 ``wait`` preference; ``[0-9]`` because ``\d`` would accept Unicode digits.
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?([0-9]{1,6})\"?(?=$|[,;\s])", re.IGNORECASE)
# SSE ids the proxy issues: a version, at most 18 digits so it fits a signed 64-bit integer.
_EVENT_ID = re.compile(r"[0-9]{1,18}")
# Beyond this many entity tags an If-None-Match is not a cache's list, just cost.
_MAX_ETAGS = 64
# Preferences longer than this are not a browser's; look at the start only.
_MAX_PREFER_CHARS = 1024

CACHE_NAME = "layers-proxy"


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison of ``If-None-Match`` against our strong ``etag``."""
    if not if_none_match or not etag:
        return False
    value = if_none_match.strip()
    if value == "*":
        return True
    for candidate in value.split(",", _MAX_ETAGS)[:_MAX_ETAGS]:
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
    match = _PREFER_WAIT.search(prefer[:_MAX_PREFER_CHARS])
    if match is None:
        return None
    return min(float(match.group(1)), max_s)


def parse_event_id(raw: str | None) -> int | None:
    """A single stream's ``Last-Event-ID`` (ASCII digits only); None when absent or not ours."""
    if raw is None:
        return None
    value = raw.strip()
    if _EVENT_ID.fullmatch(value) is None:
        return None
    return int(value)


def expect_is_continue(expect: str) -> bool:
    """True for ``Expect: 100-continue`` (the only expectation HTTP defines), case-insensitive."""
    return expect.isascii() and expect.strip().lower() == "100-continue"


def cache_status(how: str, *, stale: bool, age_s: int, fwd_status: int = 200) -> str:
    """An RFC 9211 ``Cache-Status`` value for a hit, a fetch we made, or a collapsed wait."""
    if how == "hit":
        if stale:
            return f"{CACHE_NAME}; hit; ttl={-max(1, age_s)}; detail=stale"
        return f"{CACHE_NAME}; hit"
    if how == "collapsed":
        return f"{CACHE_NAME}; fwd=miss; fwd-status={fwd_status}; collapsed"
    return f"{CACHE_NAME}; fwd=miss; fwd-status={fwd_status}; stored"
