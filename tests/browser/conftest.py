"""Fixtures for the browser suite: the demo as a real process and headless Debian Chromium."""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from proxy.testing.processes import ManagedProcess, free_port

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium misbehaves on these offline machines.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Set by scripts/screenshot: where the demo test also writes its screenshot (docs/demo.png).
DEMO_PNG_ENV = "LAYERS_DEMO_PNG"


def call(url: str, body: Any = None) -> Any:
    """GET ``url`` (POST ``body`` as JSON when given) and decode the JSON answer."""
    data = json.dumps(body).encode() if body is not None else None
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"not a loopback test URL: {url}")
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@dataclass
class Demo:
    """A running ``layers-proxy demo`` process."""

    proc: ManagedProcess
    sim_url: str

    @property
    def url(self) -> str:
        """The proxy's base URL."""
        return self.proc.url

    def stats(self) -> dict[str, Any]:
        """The demo's combined counters."""
        data: dict[str, Any] = call(self.url + "/demo/api/stats")
        return data

    def sim_containers(self) -> list[dict[str, Any]]:
        """Every simulator container with its current status."""
        data: list[dict[str, Any]] = call(self.sim_url + "/_sim/containers")["containers"]
        return data

    def container(self, stages: list[list[Any]], ending: str = "completed") -> str:
        """Start a scripted container on the simulator; return its id."""
        return self.container_and_job(stages, ending)[0]

    def container_and_job(
        self, stages: list[list[Any]], ending: str = "completed"
    ) -> tuple[str, str]:
        """Start a scripted container (and its job) on the simulator; return both ids."""
        made = call(self.sim_url + "/_sim/containers", {"stages": stages, "ending": ending})
        return made["containerId"], made["jobId"]


StartDemo = Callable[..., Demo]


# Module scope: the sync driver keeps an event loop running while it lives, which would break
# the async tests of later modules.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Playwright's sync driver (skips the module where Debian's Chromium is missing)."""
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """One headless Chromium per module."""
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()


@pytest.fixture(scope="session")
def start_demo() -> Iterator[StartDemo]:
    """Start demo processes (``containers``, ``speed``); all are stopped at the session's end."""
    started: list[ManagedProcess] = []

    def start(containers: int = 6, speed: float = 1.0) -> Demo:
        port, sim_port = free_port(), free_port()
        argv = [sys.executable, "-m", "proxy", "demo", "--port", str(port)]
        argv += ["--sim-port", str(sim_port), "--containers", str(containers)]
        argv += ["--redis-url", "memory://"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PROXY_", "LAYERS_"))}
        env |= {"PYTHONUNBUFFERED": "1", "LAYERS_DEMO_SPEED": str(speed)}
        proc = ManagedProcess("demo", argv, env, port)
        started.append(proc)
        proc.start("proxy listening on", timeout_s=20)
        return Demo(proc, f"http://127.0.0.1:{sim_port}")

    yield start
    for proc in started:
        assert proc.stop() == 0, proc.output()


@pytest.fixture(scope="session")
def fast_demo(start_demo: StartDemo) -> Demo:
    """Six containers on a simulator clock running six times faster (timelines of seconds)."""
    return start_demo(containers=6, speed=6)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page; uncaught JavaScript errors fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, errors


def save_screenshot(page: Page, path: Path, *copies: Path) -> Path:
    """Save a full-page screenshot at ``path`` (and byte-identical copies elsewhere)."""
    png = page.screenshot(path=str(path), full_page=True)
    for copy in copies:
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(png)
    return path
