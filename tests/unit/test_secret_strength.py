"""Weak signing secrets are refused: short, repeated, or copied from the docs."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from proxy.secret_strength import estimated_bits, weakness
from proxy.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "secret",
    [
        "a" * 40,  # one character repeated: long but publicly guessable
        "ab" * 40,
        "abc123" * 10,
        "<at least 32 random bytes: python -c 'import secrets; print(secrets.token_urlsafe(48))'>",
        "<at least 32 random bytes>",
        "change-me-change-me-change-me-change-me",
        "0123456789abcdef0123456789abcdef",  # 32 hex characters: 128 bits? no: a repeat
        "0f3a9c5e7b1d2468ace0" + "13579bdf",  # 28 hex characters: 112 bits
        "Zx81Wv52Qa7LmP0s",  # 16 base64url characters: 96 bits
    ],
)
def test_weak_secrets_are_refused(secret: str) -> None:
    assert weakness(secret) is not None


@pytest.mark.parametrize(
    "secret",
    [
        secrets.token_urlsafe(48),
        secrets.token_hex(32),  # 64 hex characters: 256 bits
        "9f86d081884c7d659a2feaa0c55ad015",  # 32 hex: exactly 128 bits
        "Zx81Wv52Qa7LmP0sT4yU9iO3",  # 24 base64url characters: 144 bits
    ],
)
def test_strong_secrets_pass(secret: str) -> None:
    assert weakness(secret) is None


def test_bits_follow_the_smallest_alphabet() -> None:
    assert estimated_bits("ab12") == 16  # hex
    assert estimated_bits("xy_-") == 24  # base64url
    assert estimated_bits("x!y?") == 26  # other printable


def test_every_placeholder_in_the_docs_is_refused() -> None:
    """Whatever `secrets = ["…"]` or `secret = "…"` shows in the docs cannot start a proxy."""
    import re

    found = []
    for doc in [ROOT / "README.md", ROOT / "config" / "proxy.toml", *ROOT.glob("docs/*.md")]:
        text = doc.read_text(encoding="utf-8")
        found += re.findall(r'secrets? = \[?"([^"]+)"', text)
        found += re.findall(r'secret = "([^"]+)"', text)
    assert found
    for placeholder in found:
        assert weakness(placeholder) is not None, placeholder


def test_start_up_names_the_tenant_and_the_rule(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text('[[tenants]]\nid = "acme"\nsecrets = ["' + "a" * 40 + '"]\n')
    with pytest.raises(SettingsError) as raised:
        load_settings({"LAYERS_API_KEY": "k"}, config)
    text = str(raised.value)
    assert "acme" in text and "repeated" in text and "a" * 40 not in text


def test_a_weak_webhook_secret_stops_start_up() -> None:
    env = {"LAYERS_API_KEY": "k", "PROXY_AUTH": "none", "LAYERS_WEBHOOK_SECRET": "x" * 40}
    with pytest.raises(SettingsError) as raised:
        load_settings(env)
    assert "webhook_secret" in str(raised.value) and "x" * 40 not in str(raised.value)
