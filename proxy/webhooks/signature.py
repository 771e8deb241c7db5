"""Layers webhook signatures (pure): ``X-Layers-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]``.

``v1`` is the hex HMAC-SHA256 of ``"<t>.<raw body>"`` under the endpoint's signing secret. During
a rotation Layers signs with the old and the new secret (several ``v1`` values) and the proxy may
hold both (``LAYERS_WEBHOOK_SECRET=new,old``); any one pair that verifies is enough.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

TOLERANCE_S = 300  # Layers' documented 5 minutes, either direction

Reason = Literal["missing", "malformed", "mismatch", "stale"]

# ASCII digits only: int() would also take "+5", " 5", "5_0" and other scripts' digits.
_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


class WebhookSignatureError(Exception):
    """The header does not authenticate the body; ``reason`` says why in one word."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """A verified signature: its timestamp, which secret matched, and the clock skew."""

    timestamp: int
    secret_index: int  # position in the secrets list; > 0 means an older secret (rotation)
    skew_s: float  # now - timestamp: positive when the signature is from the past


def parse_secrets(value: str) -> list[bytes]:
    """The signing secrets in ``LAYERS_WEBHOOK_SECRET``: comma-separated, blanks dropped."""
    return [part.strip().encode() for part in value.split(",") if part.strip()]


def sign(secret: bytes | str, timestamp: int | str, body: bytes) -> str:
    """The hex ``v1`` signature of ``body`` at ``timestamp`` (tests and the docs' example)."""
    key = secret.encode() if isinstance(secret, str) else secret
    signed = f"{timestamp}.".encode() + body
    return hmac.new(key, signed, hashlib.sha256).hexdigest()


def _parse(header: str) -> tuple[str, list[bytes]]:
    """The raw ``t`` value and the well-formed ``v1`` values (lower-case hex, as bytes)."""
    if not header.strip():
        raise WebhookSignatureError("missing", "The X-Layers-Signature header is missing.")
    stamps: list[str] = []
    candidates: list[str] = []
    for part in header.split(","):
        item = part.strip()
        if not item:
            continue  # a stray comma carries nothing
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise WebhookSignatureError(
                "malformed", "X-Layers-Signature must be comma-separated name=value pairs."
            )
        name, value = name.strip(), value.strip()
        if name == "t":
            stamps.append(value)
        elif name == "v1":
            candidates.append(value)
        # Other schemes (v0, a future v2) are skipped so that Layers can add one without
        # breaking receivers; a v1 still has to verify.
    if len(stamps) != 1 or not _TIMESTAMP.fullmatch(stamps[0]):
        raise WebhookSignatureError(
            "malformed", "X-Layers-Signature needs exactly one t=<unix seconds>."
        )
    sigs = [c.lower().encode() for c in candidates if _HEX_SHA256.fullmatch(c)]
    if not sigs:
        raise WebhookSignatureError(
            "malformed", "X-Layers-Signature has no v1=<64 hex digits> signature."
        )
    return stamps[0], sigs


def verify_signature(
    header: str,
    raw_body: bytes,
    secrets: Sequence[bytes],
    now_s: float,
    tolerance_s: float = TOLERANCE_S,
) -> VerifyResult:
    """Check ``header`` against ``raw_body`` with any of ``secrets``; raise when it fails.

    The HMAC is checked before the timestamp, so "stale" is only ever said of a genuine
    signature (a clock problem or a replay), never of a forgery.
    """
    if not secrets:
        raise ValueError("at least one signing secret is required")
    stamp, sigs = _parse(header)
    signed = stamp.encode() + b"." + raw_body
    matched = -1
    for index, secret in enumerate(secrets):
        expected = hmac.new(secret, signed, hashlib.sha256).hexdigest().encode()
        # Every candidate is compared in constant time; stopping at the first match only
        # reveals that the request was genuine.
        if any(hmac.compare_digest(expected, sig) for sig in sigs):
            matched = index
            break
    if matched < 0:
        raise WebhookSignatureError(
            "mismatch", "The X-Layers-Signature does not match the body and signing secret."
        )
    timestamp = int(stamp)
    skew_s = now_s - timestamp
    if abs(skew_s) > tolerance_s:
        when = "old" if skew_s > 0 else "in the future"
        raise WebhookSignatureError(
            "stale",
            f"The X-Layers-Signature timestamp is {abs(skew_s):.0f}s {when}; more than "
            f"{tolerance_s:g}s either way is refused as a possible replay (check the clocks).",
        )
    return VerifyResult(timestamp=timestamp, secret_index=matched, skew_s=skew_s)
