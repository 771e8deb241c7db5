"""Where raw values come from: the environment (canonical names and aliases) and a TOML file.

Each setting ``name`` is the TOML key ``name`` and the environment variable ``PROXY_<NAME>``; a few
older names stay as aliases. An unknown ``PROXY_*`` variable or file key, or an alias that
disagrees with its canonical name, is a ``SettingsError``.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.settings.fields import FIELDS, env_names, label, meta
from proxy.settings.meta import ENV_PREFIX, SettingsError

CONFIG_ENV = "PROXY_CONFIG"
# PROXY_* variables that are not settings but are still ours (so they are not "unknown").
NON_SETTING_ENV = frozenset({CONFIG_ENV})

# A Kubernetes Service named "proxy" injects these into every pod of its namespace.
_SERVICE_LINK = re.compile(r"PROXY_(SERVICE_HOST|SERVICE_PORT\w*|PORT_\d+_(TCP|UDP|SCTP)\w*)")


@dataclass
class RawInput:
    """What the file and the environment say, before coercion."""

    values: dict[str, tuple[Any, str]]  # setting name -> (raw value, source)
    tenants: Any  # the file's [[tenants]] tables, parsed by proxy.tenancy.config
    path: str | os.PathLike[str] | None
    file_source: str


def known_env() -> frozenset[str]:
    """Every ``PROXY_*`` (and alias) variable the proxy reads."""
    return frozenset(n for name in FIELDS for n in env_names(name)) | NON_SETTING_ENV


def check_env_names(env: Mapping[str, str]) -> None:
    """Refuse ``PROXY_*`` variables that are no setting, suggesting the one meant."""
    known = known_env()
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known)
    if not unknown:
        return
    described = []
    for name in unknown:
        if _SERVICE_LINK.fullmatch(name):
            described.append(
                f"{name} (a Kubernetes service link from a Service named 'proxy': set "
                "enableServiceLinks: false on the pod, or rename the Service)"
            )
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.7)
        described.append(f"{name} (did you mean {close[0]}?)" if close else name)
    noun = "variable" if len(unknown) == 1 else "variables"
    raise SettingsError(
        f"unknown environment {noun} {', '.join(described)}; every setting is PROXY_<NAME> "
        "(see docs/configuration.md)"
    )


def read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The TOML config file as a dict."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"config file {path}: not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"config file {path}: cannot read it: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path}: invalid TOML: {exc}") from None


def from_env(name: str, env: Mapping[str, str]) -> tuple[str, str] | None:
    """(raw value, source) from the environment; an empty variable counts as unset."""
    given = [(var, env[var]) for var in env_names(name) if env.get(var, "") != ""]
    if not given:
        return None
    if len({value for _, value in given}) > 1:
        if meta(name).secret:
            both = " and ".join(var for var, _ in given)
        else:
            both = " and ".join(f"{var}={value!r}" for var, value in given)
        raise SettingsError(
            f"{label(name)}: {both} are both set and disagree; set only {given[0][0]}"
        )
    var, value = given[0]
    return value, f"environment {var}"


def read_sources(env: Mapping[str, str], config_path: str | os.PathLike[str] | None) -> RawInput:
    """Every raw value the environment and the config file give (environment wins)."""
    check_env_names(env)
    path = config_path or env.get(CONFIG_ENV) or None
    file_values = read_file(path) if path else {}
    file_source = f"config file {path}"
    tenants = file_values.pop("tenants", [])

    values: dict[str, tuple[Any, str]] = {}
    for key, value in file_values.items():
        if key not in FIELDS:
            close = difflib.get_close_matches(key, list(FIELDS), n=1, cutoff=0.7)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SettingsError(f"{file_source}: unknown setting {key!r}{hint}")
        values[key] = (value, file_source)
    for name in FIELDS:
        found = from_env(name, env)
        if found is not None:
            values[name] = found
    return RawInput(values=values, tenants=tenants, path=path, file_source=file_source)
