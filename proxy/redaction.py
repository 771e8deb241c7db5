"""Keeping secrets out of text: a wrapper whose repr hides them, and a scrubber for strings."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

# Anything shaped like a Layers key, even one the proxy was never told about.
_KEY_SHAPE = re.compile(r"lp_(?:live|test)_[A-Za-z0-9_\-]{8,}")
_KEY_SHAPE_BYTES = re.compile(_KEY_SHAPE.pattern.encode())
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]{8,}")
_TOKEN_PARAM = re.compile(r"(?i)(access_token=)[^&\s\"']+")

REDACTED = "[REDACTED]"


class Secret:
    """A string that never shows itself in repr/str, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('[REDACTED]')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


class Scrubber:
    """Replaces known secrets and secret-shaped substrings in text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def add(self, secret: str) -> None:
        """Also scrub ``secret`` from now on."""
        if len(secret) >= 6 and secret not in self._secrets:
            self._secrets.append(secret)
            self._secrets.sort(key=len, reverse=True)

    def scrub(self, text: str) -> str:
        """``text`` with every secret replaced by a marker."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = _KEY_SHAPE.sub(REDACTED, text)
        text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
        return _TOKEN_PARAM.sub(lambda m: m.group(1) + REDACTED, text)


def key_id(api_key: str) -> str:
    """The log-safe key id of ``lp_<env>_<key_id>_<secret>``, or a placeholder."""
    parts = api_key.split("_")
    if len(parts) >= 4 and parts[0] == "lp" and len(parts[2]) == 16:
        return parts[2]
    return "unknown-shape"


# Shorter values would match ordinary text; no real Layers key is anywhere near this short.
MIN_SECRET_LENGTH = 8


class KeyRedactor:
    """Removes the API key, and anything shaped like a Layers key, from what the upstream sent.

    An upstream that echoes request headers (a debugging gateway, an error message quoting the
    request) would otherwise hand the key to every client watching. "Bearer <key>" becomes
    "Bearer [REDACTED]". JSON is searched after decoding, so ``\\u``-escaped keys are found too.
    """

    def __init__(self, *secrets: Secret) -> None:
        values = {s.reveal() for s in secrets if len(s.reveal()) >= MIN_SECRET_LENGTH}
        self._secrets = sorted(values, key=len, reverse=True)

    def text(self, text: str) -> str:
        """``text`` with every secret replaced by the marker."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _KEY_SHAPE.sub(REDACTED, text)

    def json(self, value: Any) -> tuple[Any, bool]:
        """``value`` (decoded JSON) with every string, object keys included, redacted.

        Returns the value and whether anything changed; an unchanged value is returned as is,
        so the caller can keep forwarding the upstream's exact bytes.
        """
        if isinstance(value, str):
            cleaned = self.text(value)
            return cleaned, cleaned != value
        if isinstance(value, list):
            items = [self.json(item) for item in value]
            if any(changed for _, changed in items):
                return [item for item, _ in items], True
            return value, False
        if isinstance(value, dict):
            pairs = [(self.json(k), self.json(v)) for k, v in value.items()]
            if any(kc or vc for (_, kc), (_, vc) in pairs):
                return {k: v for (k, _), (v, _) in pairs}, True
            return value, False
        return value, False

    def body(self, raw: bytes) -> bytes:
        """``raw`` without secrets: re-serialised when it is JSON, replaced bytewise otherwise."""
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            for secret in self._secrets:
                raw = raw.replace(secret.encode(), REDACTED.encode())
            return _KEY_SHAPE_BYTES.sub(REDACTED.encode(), raw)
        cleaned, changed = self.json(parsed)
        return orjson.dumps(cleaned) if changed else raw
