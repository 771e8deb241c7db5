"""Looking up the declarations in ``definitions.Settings``: each setting's ``Meta``, its
environment names, and how messages name it."""

from __future__ import annotations

import dataclasses
from typing import Any

from proxy.settings.definitions import Settings
from proxy.settings.meta import ENV_PREFIX, Meta

FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(Settings)}


def meta(name: str) -> Meta:
    """The declaration of setting ``name`` (an undocumented one gets an empty ``Meta``)."""
    found = FIELDS[name].metadata.get("setting")
    return found if isinstance(found, Meta) else Meta()


def env_names(name: str) -> tuple[str, ...]:
    """The environment variables of setting ``name``: the canonical one first, then its alias."""
    m = meta(name)
    if not m.env:
        return ()
    canonical = ENV_PREFIX + name.upper()
    return (canonical, m.alias) if m.alias and m.alias != canonical else (canonical,)


def label(name: str) -> str:
    """How messages name setting ``name``: ``name (PROXY_NAME or ALIAS)``."""
    names = env_names(name)
    return f"{name} ({' or '.join(names)})" if names else name
