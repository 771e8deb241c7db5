"""Start-up errors as an operator sees them: exit 2, one line on stderr, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest

from proxy import __version__
from proxy.testing.processes import ManagedProcess, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
OPEN = {"LAYERS_API_KEY": "k", "PROXY_AUTH": "none", "REDIS_URL": "memory://"}


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def _one_line_error(done: subprocess.CompletedProcess[str], needle: str) -> None:
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and needle in lines[0], done.stderr


@pytest.mark.parametrize("command", ["serve", "check-config"])
@pytest.mark.parametrize(
    ("env", "needle"),
    [
        (
            {"PROXY_LOG_LEVEL": "verbose"},
            "log_level (PROXY_LOG_LEVEL): 'verbose' must be one of debug, info, warning, error",
        ),
        ({"REDIS_URL": "redis://h:notaport"}, "redis_url (PROXY_REDIS_URL or REDIS_URL): has an"),
        ({"PROXY_AUTHMODE": "none"}, "PROXY_AUTHMODE (did you mean PROXY_AUTH_MODE?)"),
        ({"PROXY_AUTH_MODE": "tokens"}, "PROXY_AUTH_MODE='tokens' and PROXY_AUTH='none'"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(
    command: str, env: dict[str, str], needle: str
) -> None:
    """serve and check-config refuse the same configurations the same way."""
    done = _run(OPEN | env, command)
    _one_line_error(done, needle)
    assert done.stderr.startswith(f"layers-proxy {command}: configuration error: ")


def test_a_port_in_use_is_one_line_and_exit_2() -> None:
    """A taken port is reported as such, before the proxy starts anything."""
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        done = _run(OPEN | {"PROXY_PORT": str(port)}, "serve")
    _one_line_error(
        done, f"layers-proxy serve: cannot listen on 127.0.0.1:{port}: address already in use"
    )


def test_check_config_prints_the_effective_configuration(tmp_path: Path) -> None:
    """Valid: exit 0, TOML on stdout with sources, secrets masked, a verdict on stderr."""
    config = tmp_path / "proxy.toml"
    config.write_text("linger_s = 7.0\n", encoding="utf-8")
    env = OPEN | {"LAYERS_API_KEY": "lp_live_keyvalue_do_not_print", "PROXY_LOG_LEVEL": "DEBUG"}
    done = _run(env, "check-config", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert "keyvalue_do_not_print" not in done.stdout + done.stderr
    parsed = tomllib.loads(done.stdout)
    assert (parsed["linger_s"], parsed["log_level"], parsed["auth_mode"]) == (7.0, "debug", "none")
    assert done.stderr.strip() == "layers-proxy check-config: the configuration is valid"


def test_version_matches_the_package() -> None:
    """--version prints the version pyproject.toml declares."""
    done = _run({}, "--version")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert done.returncode == 0
    assert done.stdout.strip() == f"layers-proxy {__version__}"
    assert __version__ == declared["project"]["version"]


def test_demo_host_makes_it_reachable_from_outside_the_container() -> None:
    """``demo --host 0.0.0.0`` (what docker-compose.yml runs) binds every interface."""
    port, sim_port = free_port(), free_port()
    argv = [sys.executable, "-m", "proxy", "demo", "--host", "0.0.0.0", "--port", str(port)]
    argv += ["--sim-port", str(sim_port), "--containers", "1", "--redis-url", "memory://"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROXY_", "LAYERS_"))}
    proc = ManagedProcess("demo", argv, env | {"PYTHONUNBUFFERED": "1"}, port)
    proc.start("proxy listening on", timeout_s=20)
    try:
        assert f"http://0.0.0.0:{port}" in proc.output()
        for url in (f"{proc.url}/demo", f"http://127.0.0.1:{sim_port}/_sim/clock"):
            with urllib.request.urlopen(url, timeout=5) as response:
                assert response.status == 200
    finally:
        assert proc.stop() == 0, proc.output()
