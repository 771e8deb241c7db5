"""Settings: frozen data built once from an optional TOML file and the environment.

Every setting is declared once, in ``definitions.py``, with its meaning and its rules; that one
declaration drives parsing, validation, ``layers-proxy check-config`` and the reference in
docs/configuration.md (``python -m proxy.settings --update docs/configuration.md`` regenerates it;
a test keeps the two equal).

Precedence: environment > config file > defaults. Nothing else in the package reads settings
from ``os.environ`` (the demo's own ``REDIS_URL`` fallback aside). Each setting ``name`` is the
TOML key ``name`` and the environment variable ``PROXY_<NAME>``; a few older names stay as
aliases. A bad value, an alias that disagrees with its canonical name, or an unknown ``PROXY_*``
variable stops start-up with a ``SettingsError`` that names the setting and where the value came
from.

The modules: ``meta`` (``Meta``, ``SettingsError``), ``definitions`` (the ``Settings`` table:
add a setting there), ``fields`` (looking declarations up), ``sources`` (environment, aliases,
TOML), ``coerce`` (raw value to type), ``validate`` (rules), ``loader`` (``load_settings``),
``reference`` (check-config output, the docs reference, ``python -m proxy.settings``).
"""

from proxy.settings.definitions import Settings
from proxy.settings.fields import FIELDS, env_names, label, meta
from proxy.settings.loader import load_settings, load_settings_with_sources
from proxy.settings.meta import ENV_PREFIX, MASK, Meta, SettingsError
from proxy.settings.reference import (
    REFERENCE_END,
    REFERENCE_START,
    describe,
    main,
    reference_markdown,
    update_reference,
)
from proxy.settings.sources import CONFIG_ENV, NON_SETTING_ENV
from proxy.settings.validate import mask_url

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "FIELDS",
    "MASK",
    "NON_SETTING_ENV",
    "REFERENCE_END",
    "REFERENCE_START",
    "Meta",
    "Settings",
    "SettingsError",
    "describe",
    "env_names",
    "label",
    "load_settings",
    "load_settings_with_sources",
    "main",
    "mask_url",
    "meta",
    "reference_markdown",
    "update_reference",
]
