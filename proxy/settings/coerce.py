"""Raw values (environment strings, TOML values) turned into each setting's declared type."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from proxy.redaction import Secret
from proxy.settings.fields import FIELDS, label, meta
from proxy.settings.meta import Meta, SettingsError

Bad = Callable[[str], SettingsError]  # builds the error for one value: bad("is not a number")


def _secret(raw: Any, bad: Bad) -> Secret:
    if not isinstance(raw, str):
        raise bad("must be a string")
    return Secret(raw)


def _bool(raw: Any, m: Meta, bad: Bad) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise bad("is not true/false")


def _float(raw: Any, m: Meta, bad: Bad) -> float:
    try:
        if isinstance(raw, bool):
            raise ValueError
        value = float(raw)
    except (TypeError, ValueError):
        raise bad("is not a number") from None
    if not math.isfinite(value):
        raise bad("is not a finite number")
    return value


def _int(raw: Any, m: Meta, bad: Bad) -> int:
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise bad("is not a whole number")
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise bad("is not a whole number") from None


def _str(raw: Any, m: Meta, bad: Bad) -> str:
    if not isinstance(raw, str):
        raise bad("must be a string")
    if m.choices:
        lowered = raw.strip().lower()
        if lowered not in m.choices:
            raise bad(f"must be one of {', '.join(m.choices)}")
        return lowered
    return raw


# Keyed by the field's annotation (a string: definitions.py uses postponed annotations).
_PARSERS: dict[str, Callable[[Any, Meta, Bad], Any]] = {
    "bool": _bool,
    "float": _float,
    "int": _int,
    "str": _str,
}


def coerce(name: str, raw: Any, source: str) -> Any:
    """``raw`` (from ``source``) as setting ``name``'s type; a ``SettingsError`` names both."""
    kind = FIELDS[name].type
    m = meta(name)

    def bad(why: str) -> SettingsError:
        shown = "" if m.secret else f"{raw!r} "
        return SettingsError(f"{label(name)}: {shown}{why} (from {source})")

    if m.secret:
        return _secret(raw, bad)
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        raise bad(f"has an unsupported type {kind}")
    return parser(raw, m, bad)
