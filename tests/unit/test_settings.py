"""Settings: names and aliases, precedence, validation, check-config output, the reference."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from proxy.redaction import Secret
from proxy.settings import (
    REFERENCE_END,
    REFERENCE_START,
    Settings,
    SettingsError,
    describe,
    env_names,
    load_settings,
    load_settings_with_sources,
    meta,
    reference_markdown,
    update_reference,
)

pytestmark = pytest.mark.timeout(10)

ROOT = Path(__file__).resolve().parents[2]
OPEN = {"LAYERS_API_KEY": "k", "PROXY_AUTH": "none"}
TENANT = (
    '[[tenants]]\nid = "acme"\nsecrets = ["tenant-signing-secret-0123456789abcdefghijklmnop"]\n'
)
FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
NUMERIC = [name for name, f in FIELDS.items() if f.type in ("int", "float")]


def _error(env: dict[str, str], config: Path | None = None) -> str:
    with pytest.raises(SettingsError) as caught:
        load_settings(env=env, config_path=config)
    return str(caught.value)


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_fields_others_read_keep_their_names_types_and_defaults() -> None:
    """The resilience work reads these; the declaration style must not change them."""
    expected = {
        "upstream_read_timeout_s": ("float", 5.0),
        "upstream_pool_wait_s": ("float", 2.0),
        "upstream_failing_connections": ("int", 32),
        "upstream_max_body_bytes": ("int", 65536),
        "header_timeout_s": ("float", 10.0),
        "keepalive_timeout_s": ("float", 30.0),
        "shutdown_timeout_s": ("float", 5.0),
        "log_summary_interval_s": ("float", 10.0),
    }
    defaults = Settings()
    for name, (kind, default) in expected.items():
        assert FIELDS[name].type == kind
        assert getattr(defaults, name) == default
    assert Settings().with_overrides(port=1).port == 1
    assert not Settings().layers_api_key and isinstance(Settings().admin_token, Secret)


def test_environment_beats_file_beats_defaults(tmp_path: Path) -> None:
    """A file value replaces the default; the same setting in the environment wins."""
    config = _config(tmp_path, "linger_s = 7.0\nport = 1\n")
    settings, sources = load_settings_with_sources(OPEN | {"PROXY_PORT": "2"}, config)
    assert (settings.linger_s, settings.port, settings.stale_after_s) == (7.0, 2, 15.0)
    assert sources["linger_s"] == f"config file {config}"
    assert sources["port"] == "environment PROXY_PORT"
    assert sources["stale_after_s"] == "default"


def test_proxy_config_names_the_file(tmp_path: Path) -> None:
    """PROXY_CONFIG is the file when --config is not given (and is not an unknown variable)."""
    config = _config(tmp_path, "linger_s = 9.0\n")
    assert load_settings(OPEN | {"PROXY_CONFIG": str(config)}).linger_s == 9.0


def _sample(name: str) -> tuple[str, object]:
    """A valid value for setting ``name`` that is not its default: (as text, as parsed)."""
    special = {
        "layers_api_url": "http://sim:1",
        "redis_url": "memory://",
        "auth_mode": "none",
        "log_level": "error",
        "access_log": "off",
        "budget_share": "0.5",
        "webhook_secret": "whsec_" + "Vq8wZ3rT5yU1iO9pk3Yq",
        "workers": "2",
    }
    if name in special:
        return special[name], float(special[name]) if name == "budget_share" else special[name]
    default = getattr(Settings(), name)
    kind = FIELDS[name].type
    if kind == "bool":
        return str(not default).lower(), not default
    if kind in ("int", "float"):
        doubled = default * 2 or 1  # twice the default keeps every rule between settings
        return str(doubled), doubled
    return "sample", "sample"


@pytest.mark.parametrize("name", [n for n in FIELDS if env_names(n)])
def test_every_setting_reads_its_canonical_variable(name: str) -> None:
    """PROXY_<NAME> sets every setting (PROXY_AUTH_MODE used to be ignored)."""
    text, expected = _sample(name)
    env = {"PROXY_LAYERS_API_KEY": "k", "PROXY_AUTH_MODE": "none", f"PROXY_{name.upper()}": text}
    settings, sources = load_settings_with_sources(env)
    got = getattr(settings, name)
    assert (got.reveal() if isinstance(got, Secret) else got) == expected
    assert sources[name] == f"environment PROXY_{name.upper()}"


@pytest.mark.parametrize(
    ("name", "alias", "value", "expected"),
    [
        ("layers_api_url", "LAYERS_API_URL", "http://sim:8090", "http://sim:8090"),
        ("layers_api_key", "LAYERS_API_KEY", "lp_test_k", "lp_test_k"),
        ("redis_url", "REDIS_URL", "memory://", "memory://"),
        ("auth_mode", "PROXY_AUTH", "none", "none"),
        ("rate_per_min", "LAYERS_RATE_PER_MIN", "6000", 6000),
        ("webhook_secret", "LAYERS_WEBHOOK_SECRET", "whsec_" + "k3Yq" * 6, "whsec_" + "k3Yq" * 6),
    ],
)
def test_aliases_work_and_agreeing_duplicates_are_fine(
    name: str, alias: str, value: str, expected: object
) -> None:
    """The older names set the setting; the same value under both names is accepted."""
    assert env_names(name) == (f"PROXY_{name.upper()}", alias)
    base = {"PROXY_LAYERS_API_KEY": "k", "PROXY_AUTH_MODE": "none"}
    base = {var: v for var, v in base.items() if var not in env_names(name)}
    for env in ({alias: value}, {alias: value, f"PROXY_{name.upper()}": value}):
        settings = load_settings(base | env)
        got = getattr(settings, name)
        assert (got.reveal() if isinstance(got, Secret) else got) == expected


def test_an_alias_that_disagrees_stops_start_up_naming_both() -> None:
    """Two names, two values: refuse, naming both, showing values only for non-secrets."""
    message = _error(OPEN | {"PROXY_AUTH_MODE": "tokens"})
    assert "PROXY_AUTH_MODE='tokens'" in message and "PROXY_AUTH='none'" in message
    message = _error(OPEN | {"PROXY_LAYERS_API_KEY": "second-key"})
    assert "PROXY_LAYERS_API_KEY and LAYERS_API_KEY" in message
    assert "second-key" not in message


def test_an_empty_variable_counts_as_unset() -> None:
    """``PROXY_X=`` leaves the default (or the file's value) alone."""
    assert load_settings(OPEN | {"PROXY_LINGER_S": "", "PROXY_AUTH_MODE": ""}).linger_s == 15.0


@pytest.mark.parametrize(
    ("variable", "needle"),
    [
        ("PROXY_LOGLEVEL", "PROXY_LOGLEVEL (did you mean PROXY_LOG_LEVEL?)"),
        ("PROXY_API_KEY", "PROXY_API_KEY (did you mean PROXY_LAYERS_API_KEY?)"),
        ("PROXY_WHATEVER", "unknown environment variable PROXY_WHATEVER;"),
        ("PROXY_SERVICE_HOST", "Kubernetes service link"),
        ("PROXY_PORT_8080_TCP_ADDR", "enableServiceLinks: false"),
    ],
)
def test_unknown_proxy_variables_stop_start_up(variable: str, needle: str) -> None:
    """A PROXY_* variable that is no setting is a typo (or a service link): say which."""
    assert needle in _error(OPEN | {variable: "1"})


def test_other_variables_are_not_ours() -> None:
    """Only the PROXY_ prefix is checked: LAYERS_DEMO_SPEED, HTTP_PROXY and the like pass."""
    env = OPEN | {"LAYERS_DEMO_SPEED": "6", "HTTP_PROXY": "http://x", "NO_PROXY": "*"}
    assert load_settings(env).auth_mode == "none"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"PROXY_LOG_LEVEL": "verbose"}, "log_level (PROXY_LOG_LEVEL): 'verbose' must be one of"),
        ({"PROXY_ACCESS_LOG": "some"}, "access_log (PROXY_ACCESS_LOG): 'some' must be one of"),
        ({"PROXY_AUTH": "maybe"}, "must be one of tokens, none (from environment PROXY_AUTH)"),
        ({"PROXY_PORT": "eighty"}, "port (PROXY_PORT): 'eighty' is not a whole number"),
        ({"PROXY_PORT": "70000"}, "port (PROXY_PORT): must be at most 65535"),
        ({"PROXY_FLOOR_S": "0.5"}, "floor_s (PROXY_FLOOR_S): must be at least 1"),
        ({"PROXY_LINGER_S": "nan"}, "linger_s (PROXY_LINGER_S): 'nan' is not a finite number"),
        ({"PROXY_LINGER_S": "-inf"}, "is not a finite number"),
        ({"PROXY_UPSTREAM_ETAGS": "maybe"}, "upstream_etags (PROXY_UPSTREAM_ETAGS): 'maybe'"),
        ({"PROXY_BUDGET_SHARE": "1.5"}, "budget_share (PROXY_BUDGET_SHARE): must be at most 1"),
        ({"PROXY_MAX_STREAM_IDS": "0"}, "max_stream_ids (PROXY_MAX_STREAM_IDS): must be at"),
        ({"PROXY_SLOW_INTERVAL_S": "0.5"}, "slow_interval_s (PROXY_SLOW_INTERVAL_S)"),
        ({"PROXY_LEASE_TTL_S": "2"}, "lease_ttl_s (PROXY_LEASE_TTL_S): must be at least 3 times"),
        ({"PROXY_BACKOFF_MAX_S": "1"}, "must not be below backoff_base_s (2)"),
        (
            {"PROXY_UPSTREAM_FAILING_CONNECTIONS": "257"},
            "must not be above upstream_max_connections (256)",
        ),
        (
            {"PROXY_UPSTREAM_FAILING_CONNECTIONS": "256"},
            "must be below upstream_max_connections",
        ),
        ({"LAYERS_API_URL": "ftp://x"}, "must be an http(s) URL"),
        ({"PROXY_AUTH": "tokens"}, "no [[tenants]] are configured"),
    ],
)
def test_invalid_values_name_the_setting(env: dict[str, str], needle: str) -> None:
    """Every enum-like and numeric setting is checked; the error names the setting."""
    assert needle in _error(OPEN | env)


@pytest.mark.parametrize("name", NUMERIC)
def test_every_numeric_setting_has_a_lower_bound(name: str) -> None:
    """A negative number is refused for every numeric setting, naming it."""
    message = _error(OPEN | {env_names(name)[0]: "-1"})
    assert message.startswith(f"{name} (")


def test_enum_values_are_case_insensitive() -> None:
    """``INFO`` is ``info``; the stored value is the lowercase one others compare against."""
    settings = load_settings(OPEN | {"PROXY_LOG_LEVEL": "WARNING", "PROXY_AUTH": "None"})
    assert (settings.log_level, settings.auth_mode) == ("warning", "none")


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("redis://h:notaport", "has an invalid port 'notaport'"),
        ("redis://h:99999", "has an invalid port '99999'"),
        ("redis:///0", "has no host"),
        ("redis://h/zero", "has an invalid database 'zero'"),
        (
            "mysql://h",
            "must start with redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://",
        ),
        ("unix://", "needs a socket path"),
        ("redis+sentinel://h1:26379,h2:x/mymaster", "sentinel address 'h2:x' that is not"),
        ("redis+sentinel://h1:26379", "must name the master after the sentinels"),
        ("redis+sentinel://h1/mymaster/zero", "has an invalid database 'zero'"),
    ],
)
def test_malformed_redis_urls_get_one_clear_message(url: str, needle: str) -> None:
    """The URL is checked up front instead of failing inside the Redis client."""
    message = _error(OPEN | {"REDIS_URL": url})
    assert message.startswith("redis_url (PROXY_REDIS_URL or REDIS_URL): ")
    assert needle in message and "\n" not in message


def test_good_redis_urls_pass() -> None:
    """The forms the docs name are accepted."""
    for url in (
        "redis://127.0.0.1:6379/0",
        "redis://:pw@redis",
        "rediss://user:pw@redis.example:6380/2",
        "unix:///run/redis.sock",
        "redis+sentinel://:pw@s1:26379,s2:26380,[::1]:26381/mymaster/2",
        "redis+sentinel://sentinel/mymaster",
        "memory://",
    ):
        assert load_settings(OPEN | {"REDIS_URL": url}).redis_url == url


def test_a_password_in_a_bad_url_is_masked() -> None:
    """Error messages never echo a Redis password."""
    message = _error(OPEN | {"REDIS_URL": "redis://:hunter2hunter2@h:port"})
    assert "hunter2" not in message and "********" in message


def test_file_errors_name_the_file_and_suggest(tmp_path: Path) -> None:
    """Unknown keys suggest the closest setting; wrong types name the file."""
    config = _config(tmp_path, "linger = 3\n")
    assert f"config file {config}: unknown setting 'linger' (did you mean 'linger_s'?)" in _error(
        OPEN, config
    )
    config = _config(tmp_path, 'port = "eighty"\n')
    assert f"(from config file {config})" in _error(OPEN, config)
    config = _config(tmp_path, "port = \n")
    assert "invalid TOML" in _error(OPEN, config)
    assert "not found" in _error(OPEN, tmp_path / "missing.toml")


def test_describe_masks_secrets_and_is_toml(tmp_path: Path) -> None:
    """check-config's output parses as TOML, names sources and shows no secret."""
    config = _config(tmp_path, "linger_s = 7.0\n" + TENANT)
    env = {
        "LAYERS_API_KEY": "lp_live_supersecretkey",
        "PROXY_ADMIN_TOKEN": "admin-secret-token",
        "LAYERS_WEBHOOK_SECRET": "webhook-secret-Vq8wZ3rT5yU1iO9p",
        "REDIS_URL": "redis://:redis-password@redis:6379/0",
    }
    settings, sources = load_settings_with_sources(env, config)
    text = describe(settings, sources)
    for secret in ("supersecretkey", "admin-secret-token", "Vq8wZ3rT5yU1iO9p", "redis-password"):
        assert secret not in text
    assert "tenant-signing-secret" not in text
    parsed = tomllib.loads(text)
    assert parsed["layers_api_key"] == "********"
    assert parsed["redis_url"] == "redis://:********@redis:6379/0"
    assert parsed["linger_s"] == 7.0 and parsed["tenants"][0]["id"] == "acme"
    assert parsed["tenants"][0]["secrets"] == [{"kid": "0", "secret": "********"}]
    assert f"# config file {config}" in text and "# environment LAYERS_API_KEY" in text
    assert set(parsed) == set(FIELDS)


def test_every_setting_is_documented() -> None:
    """Each setting declares what it means (the reference shows it)."""
    assert [name for name in FIELDS if not meta(name).doc] == []


def test_the_reference_in_docs_is_current() -> None:
    """docs/configuration.md carries exactly the reference the code generates.

    Regenerate with ``python -m proxy.settings --update docs/configuration.md``.
    """
    document = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert update_reference(document) == document
    for name in FIELDS:
        assert f"| `{name}` |" in reference_markdown()


def test_the_reference_command_prints_and_rewrites(tmp_path: Path) -> None:
    """``python -m proxy.settings`` (the package's ``__main__``): ``--markdown`` prints the
    reference, ``--update FILE`` rewrites FILE's reference and leaves the rest alone; a document
    still carrying the marker from when the settings were one module gets the current one."""
    printed = subprocess.run(
        [sys.executable, "-m", "proxy.settings", "--markdown"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert printed.stdout == reference_markdown()
    old_marker = REFERENCE_START.replace("proxy/settings/definitions.py", "proxy/settings.py")
    assert old_marker != REFERENCE_START
    doc = tmp_path / "configuration.md"
    doc.write_text(f"# Intro\n\n{old_marker}\n\nstale\n{REFERENCE_END}\n\nOutro\n")
    done = subprocess.run(
        [sys.executable, "-m", "proxy.settings", "--update", str(doc)],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert done.stdout == f"updated {doc}\n"
    text = doc.read_text()
    assert (
        text
        == f"# Intro\n\n{REFERENCE_START}\n\n{reference_markdown()}\n{REFERENCE_END}\n\nOutro\n"
    )
    assert update_reference(text) == text
