"""The command line: clear start-up errors, embedded mode, readiness."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest

from proxy.simulator.state import DEFAULT_KEY
from proxy.testing.processes import start_proxy, write_config
from tests.conftest import Sim

pytestmark = [pytest.mark.integration]


def _serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", "serve", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"PROXY_AUTH": "none"}, "LAYERS_API_KEY"),
        ({"LAYERS_API_KEY": "k", "PROXY_AUTH": "none", "PROXY_PORT": "eighty"}, "port"),
        ({"LAYERS_API_KEY": "k", "PROXY_AUTH": "none", "REDIS_URL": "mysql://x"}, "REDIS_URL"),
        ({"LAYERS_API_KEY": "k", "PROXY_AUTH": "none", "PROXY_FLOOR_S": "0.5"}, "floor_s"),
        ({"LAYERS_API_KEY": "k"}, "PROXY_AUTH=none"),
        ({"LAYERS_API_KEY": "k", "PROXY_AUTH": "maybe"}, "PROXY_AUTH"),
    ],
)
def test_bad_configuration_stops_start_up_naming_the_setting(
    env: dict[str, str], needle: str
) -> None:
    """A missing or invalid setting exits 2 with a message that names it."""
    done = _serve(env)
    assert done.returncode == 2, done
    assert needle in done.stderr, done.stderr


@pytest.mark.timeout(30)
def test_config_file_errors_name_the_file_and_key() -> None:
    """An unknown key in the config file is reported with the file name."""
    path = write_config("unknown_thing = 3\n")
    done = _serve({"LAYERS_API_KEY": "k", "PROXY_AUTH": "none"}, "--config", str(path))
    assert done.returncode == 2
    assert str(path) in done.stderr and "unknown_thing" in done.stderr


@pytest.mark.timeout(30)
def test_config_file_values_apply_and_environment_wins(sim: Sim) -> None:
    """Values come from the file, the environment overrides them."""
    path = write_config("linger_s = 7.0\nport = 1\n")
    proc = start_proxy(
        {
            "LAYERS_API_KEY": DEFAULT_KEY,
            "LAYERS_API_URL": sim.url,
            "REDIS_URL": "memory://",
            "PROXY_AUTH": "none",
        },
        args=["--config", str(path)],
    )
    try:
        with urllib.request.urlopen(proc.url + "/healthz", timeout=5) as resp:
            assert resp.status == 200
    finally:
        proc.stop()


@pytest.mark.timeout(30)
def test_embedded_mode_serves_and_says_so(sim: Sim) -> None:
    """REDIS_URL=memory:// runs on the in-process Redis; /readyz reports it."""
    cid, _ = sim.container([["generating_visuals", 30.0]])
    proc = start_proxy(
        {
            "LAYERS_API_KEY": DEFAULT_KEY,
            "LAYERS_API_URL": sim.url,
            "REDIS_URL": "memory://",
            "PROXY_AUTH": "none",
        }
    )
    try:
        with urllib.request.urlopen(f"{proc.url}/v1/content/{cid}/progress", timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(proc.url + "/readyz", timeout=5) as resp:
            assert b'"embedded"' in resp.read()
    finally:
        proc.stop()


@pytest.mark.timeout(30)
def test_every_subcommand_has_help() -> None:
    """serve, simulate, demo and token each document themselves."""
    for sub in ("serve", "simulate", "demo", "token"):
        done = subprocess.run(
            [sys.executable, "-m", "proxy", sub, "--help"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert done.returncode == 0 and "usage:" in done.stdout, (sub, done.stderr)
