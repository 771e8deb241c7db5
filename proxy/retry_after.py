"""Parsing the upstream's ``Retry-After`` header (RFC 9110 §10.2.3), pure."""

from __future__ import annotations

import email.utils


def parse_retry_after(value: str | None, *, now_wall_s: float) -> float | None:
    """Seconds to wait from ``now_wall_s``, or None when the header is absent or unreadable.

    Accepts delay-seconds or an HTTP-date; a date in the past means zero.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    # isascii too: str.isdigit() accepts digits like "¹" that int() refuses.
    if text.isascii() and text.isdigit():
        return float(min(int(text), 86_400))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_wall_s)
