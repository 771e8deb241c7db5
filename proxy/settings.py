"""Settings: frozen data built once from an optional TOML file and the environment.

Precedence: environment > config file > defaults. Nothing else in the package reads ``os.environ``.
Every setting has a TOML key (its field name) and an environment variable; a bad value stops
start-up with a ``SettingsError`` that names the setting and where it came from.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from proxy.cadence import CadenceRules
from proxy.redaction import Secret
from proxy.tenant_config import TenantConfig, parse_tenants


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names it."""


# Environment names fixed by the contract; every other field reads PROXY_<FIELD>.
_ENV_NAMES = {
    "layers_api_url": "LAYERS_API_URL",
    "layers_api_key": "LAYERS_API_KEY",
    "redis_url": "REDIS_URL",
    "host": "PROXY_HOST",
    "port": "PROXY_PORT",
    "auth_mode": "PROXY_AUTH",
    "rate_per_min": "LAYERS_RATE_PER_MIN",
    "webhook_secret": "LAYERS_WEBHOOK_SECRET",
    "admin_token": "PROXY_ADMIN_TOKEN",
}


@dataclass(frozen=True)
class Settings:
    """Everything the proxy can be told; see README's configuration table."""

    layers_api_url: str = "https://api.layers.com"
    layers_api_key: Secret = field(default_factory=lambda: Secret(""))
    redis_url: str = "redis://127.0.0.1:6379/0"
    host: str = "127.0.0.1"
    port: int = 8080
    auth_mode: str = "tokens"  # "tokens" (capability tokens per tenant) or "none" (open)
    replica_id: str = ""

    # Cadence (seed page).
    default_interval_s: float = 2.0
    slow_interval_s: float = 5.0
    slow_after_s: float = 30.0
    floor_s: float = 1.0

    # Interest and caching.
    linger_s: float = 15.0
    interest_flush_s: float = 1.0
    revalidate_terminal_after_s: float = 600.0
    negative_ttl_s: float = 10.0
    snapshot_ttl_s: float = 86400.0
    stale_after_s: float = 15.0
    l1_max_entries: int = 100_000

    # Leases.
    lease_ttl_s: float = 6.0

    # Upstream.
    upstream_timeout_s: float = 10.0
    upstream_connect_timeout_s: float = 3.0
    upstream_max_connections: int = 64
    backoff_base_s: float = 2.0
    backoff_max_s: float = 30.0
    default_cooldown_s: float = 30.0
    cold_wait_s: float = 15.0
    rate_per_min: int = 120
    budget_share: float = 0.9
    upstream_etags: bool = True  # send If-None-Match where the upstream is ETag-aware (jobs)

    # Redis.
    redis_timeout_s: float = 2.0

    # Push.
    sse_heartbeat_s: float = 15.0
    sse_write_timeout_s: float = 25.0
    sse_retry_ms: int = 3000
    long_poll_max_s: float = 30.0
    max_stream_ids: int = 100

    # Edge limits.
    max_url_bytes: int = 8192  # 100 ids of ~40 characters fit
    max_header_bytes: int = 16384

    # Logs.
    log_level: str = "info"
    access_log: str = "errors"  # "all", "errors" (non-2xx/304 and cold fetches) or "off"

    # Tenants, admin, webhooks.
    tenants: tuple[TenantConfig, ...] = ()
    admin_token: Secret = field(default_factory=lambda: Secret(""))
    webhook_secret: Secret = field(default_factory=lambda: Secret(""))
    token_audience: str = "layers-progress-proxy"  # noqa: S105 (a JWT audience, not a secret)

    @functools.cached_property
    def cadence(self) -> CadenceRules:
        """The cadence knobs as the pure cadence module takes them."""
        return CadenceRules(
            default_interval_s=self.default_interval_s,
            slow_interval_s=self.slow_interval_s,
            slow_after_s=self.slow_after_s,
            floor_s=self.floor_s,
        )

    @property
    def budget_per_min(self) -> float:
        """Upstream GETs per minute all replicas together may spend."""
        return self.rate_per_min * self.budget_share

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests and the demo use this)."""
        return dataclasses.replace(self, **changes)


_SECRET_FIELDS = {"layers_api_key", "admin_token", "webhook_secret"}


def _env_name(name: str) -> str:
    return _ENV_NAMES.get(name, "PROXY_" + name.upper())


def _coerce(name: str, raw: Any, kind: Any, source: str) -> Any:
    where = f"{name} (from {source})"
    if kind is bool or kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{where}: {raw!r} is not true/false")
    try:
        if kind is float or kind == "float":
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        if kind is int or kind == "int":
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            return int(raw)
        if kind is str or kind == "str":
            if not isinstance(raw, str):
                raise ValueError
            return raw
    except (TypeError, ValueError):
        raise SettingsError(f"{where}: {raw!r} is not a valid {kind}") from None
    raise SettingsError(f"{where}: unsupported type")


def _validate(s: Settings) -> None:
    def bad(name: str, why: str) -> SettingsError:
        return SettingsError(f"{name} ({_env_name(name)}): {why}")

    if not s.layers_api_key:
        raise bad("layers_api_key", "is required: the Layers API key the proxy polls with")
    url = urlsplit(s.layers_api_url)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise bad("layers_api_url", "must be an http(s) URL like https://api.layers.com")
    if not (
        s.redis_url.startswith(("redis://", "rediss://", "unix://")) or s.redis_url == "memory://"
    ):
        raise bad("redis_url", "must be redis://, rediss://, unix:// or memory://")
    if not 0 <= s.port <= 65535:
        raise bad("port", "must be between 0 and 65535")
    if s.auth_mode not in ("tokens", "none"):
        raise bad("auth_mode", "must be 'tokens' or 'none'")
    if s.auth_mode == "tokens" and not s.tenants:
        raise bad(
            "auth_mode",
            "is 'tokens' but no [[tenants]] are configured; add tenants to the config file "
            "or set PROXY_AUTH=none for the open single-tenant mode",
        )
    if s.floor_s < 1.0:
        raise bad("floor_s", "must be at least 1 second (the Layers API's rule)")
    for name in ("default_interval_s", "slow_interval_s"):
        if getattr(s, name) < s.floor_s:
            raise bad(name, f"must not be below floor_s ({s.floor_s})")
    positive = (
        "linger_s",
        "interest_flush_s",
        "negative_ttl_s",
        "snapshot_ttl_s",
        "stale_after_s",
        "lease_ttl_s",
        "upstream_timeout_s",
        "upstream_connect_timeout_s",
        "backoff_base_s",
        "backoff_max_s",
        "default_cooldown_s",
        "cold_wait_s",
        "redis_timeout_s",
        "sse_heartbeat_s",
        "sse_write_timeout_s",
        "long_poll_max_s",
    )
    for name in positive:
        if getattr(s, name) <= 0:
            raise bad(name, "must be greater than 0")
    if s.lease_ttl_s < 3 * s.interest_flush_s:
        raise bad("lease_ttl_s", "must be at least 3 times interest_flush_s so renewals keep up")
    if s.rate_per_min < 1:
        raise bad("rate_per_min", "must be at least 1")
    if not 0 < s.budget_share <= 1:
        raise bad("budget_share", "must be in (0, 1]")
    if s.access_log not in ("all", "errors", "off"):
        raise bad("access_log", "must be 'all', 'errors' or 'off'")
    if not 1 <= s.max_stream_ids <= 1000:
        raise bad("max_stream_ids", "must be between 1 and 1000")


def load_settings(
    env: Mapping[str, str] | None = None, config_path: str | os.PathLike[str] | None = None
) -> Settings:
    """Build and validate settings from ``config_path`` (TOML) and ``env`` (default os.environ)."""
    env = os.environ if env is None else env
    path = config_path or env.get("PROXY_CONFIG") or None
    file_values: dict[str, Any] = {}
    source = "defaults"
    if path:
        source = str(path)
        try:
            file_values = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError(f"config file {path}: not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path}: invalid TOML: {exc}") from None

    fields = {f.name: f for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}
    tenants_raw = file_values.pop("tenants", [])
    for name, raw in file_values.items():
        if name not in fields or name == "tenants":
            raise SettingsError(f"config file {path}: unknown setting {name!r}")
        values[name] = (name, raw, f"config file {path}")
    for name in fields:
        if name == "tenants":
            continue
        env_name = _env_name(name)
        if env_name in env and env[env_name] != "":
            values[name] = (name, env[env_name], f"environment {env_name}")

    kwargs: dict[str, Any] = {}
    for name, (_, raw, where) in values.items():
        if name in _SECRET_FIELDS:
            if not isinstance(raw, str):
                raise SettingsError(f"{name} (from {where}): must be a string")
            kwargs[name] = Secret(raw)
        else:
            kwargs[name] = _coerce(name, raw, fields[name].type, where)
    try:
        kwargs["tenants"] = parse_tenants(tenants_raw, source=source)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    if not kwargs.get("replica_id"):
        kwargs["replica_id"] = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    settings = Settings(**kwargs)
    _validate(settings)
    return settings
