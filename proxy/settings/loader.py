"""``load_settings``: sources, then coercion, then validation, into one frozen ``Settings``.

Precedence: environment > config file > defaults.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping

from proxy.settings.coerce import coerce
from proxy.settings.definitions import Settings
from proxy.settings.fields import FIELDS
from proxy.settings.meta import SettingsError
from proxy.settings.sources import read_sources
from proxy.settings.validate import validate
from proxy.tenancy.config import parse_tenants


def load_settings_with_sources(
    env: Mapping[str, str] | None = None, config_path: str | os.PathLike[str] | None = None
) -> tuple[Settings, dict[str, str]]:
    """Like ``load_settings``, plus where each value came from (``default``, a file, a variable)."""
    env = os.environ if env is None else env
    given = read_sources(env, config_path)
    raw = given.values
    kwargs = {name: coerce(name, value, source) for name, (value, source) in raw.items()}
    sources = {name: raw[name][1] if name in raw else "default" for name in FIELDS}
    try:
        kwargs["tenants"] = parse_tenants(given.tenants, source=str(given.path))
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    if kwargs["tenants"]:
        sources["tenants"] = given.file_source
    if not kwargs.get("replica_id"):
        kwargs["replica_id"] = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        sources["replica_id"] = "generated"
    settings = Settings(**kwargs)
    validate(settings, sources)
    return settings, sources


def load_settings(
    env: Mapping[str, str] | None = None, config_path: str | os.PathLike[str] | None = None
) -> Settings:
    """Build and validate settings from ``config_path`` (TOML) and ``env`` (default os.environ)."""
    return load_settings_with_sources(env, config_path)[0]
