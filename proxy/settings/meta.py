"""How a setting is declared: its ``Meta`` (meaning and rules), and the one error type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names it."""


ENV_PREFIX = "PROXY_"
MASK = "********"


@dataclass(frozen=True)
class Meta:
    """What the reference says about one setting, and the rules load_settings checks."""

    doc: str = ""
    alias: str | None = None  # an older environment name, still accepted
    choices: tuple[str, ...] = ()  # lowercase; input is matched case-insensitively
    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    ge_field: str | None = None  # must be >= that other setting
    le_field: str | None = None  # must be <= that other setting
    rule: str = ""  # a rule checked in validate.py's code, as the reference shows it
    required: bool = False
    secret: bool = False
    env: bool = True  # False: config file only (tenants)
    default_text: str = ""  # how the reference shows a default that is not a plain value


def doc(text: str, **rules: Any) -> dict[str, Meta]:
    """A field's metadata: its meaning and rules (``Meta``)."""
    return {"setting": Meta(doc=text, **rules)}
