"""Cache-Control for a shared cache in front (open mode): one cadence interval, no errors."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid

import pytest

from tests.conftest import ProxyFactory, Sim

pytestmark = [pytest.mark.integration, pytest.mark.timeout(40)]


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers)


def test_open_mode_poll_answers_may_be_cached_for_one_cadence_interval(
    sim: Sim, proxies: ProxyFactory
) -> None:
    """200 and 304 say max-age = the cadence (2 s, then 5 s when slow); 404s stay no-cache."""
    proxy = proxies()
    cid, _ = sim.container([["generating_visuals", 60]])
    status, headers = get(f"{proxy.url}/v1/content/{cid}/progress")
    assert status == 200
    assert headers["Cache-Control"] == "max-age=2, stale-while-revalidate=2, stale-if-error=60"
    assert headers["X-Poll-Interval-Ms"] == "2000"
    assert "Age" in headers  # a shared cache counts it against max-age
    status, again = get(
        f"{proxy.url}/v1/content/{cid}/progress", {"If-None-Match": headers["ETag"]}
    )
    assert status == 304
    assert again["Cache-Control"] == headers["Cache-Control"]
    status, missing = get(f"{proxy.url}/v1/content/cnt_{uuid.uuid4()}/progress")
    assert status == 404
    assert "max-age" not in missing["Cache-Control"]


def test_terminal_answers_use_the_slow_interval(sim: Sim, proxies: ProxyFactory) -> None:
    """A finished container is cached for the slow interval (5 s), not the fast one."""
    proxy = proxies()
    cid, _ = sim.container([["generating_visuals", 0.5]])
    url = f"{proxy.url}/v1/content/{cid}/progress"
    for _ in range(200):
        status, headers = get(url)
        assert status == 200
        if headers["Cache-Control"].startswith("max-age=5, "):
            break
        time.sleep(0.1)
    assert headers["Cache-Control"] == "max-age=5, stale-while-revalidate=5, stale-if-error=60"
    assert headers["X-Poll-Interval-Ms"] == "5000"
