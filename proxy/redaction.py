"""Keeping secrets out of text: a wrapper whose repr hides them, and a scrubber for strings."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Anything shaped like a Layers key, even one the proxy was never told about.
_KEY_SHAPE = re.compile(r"lp_(?:live|test)_[A-Za-z0-9_\-]{8,}")
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
