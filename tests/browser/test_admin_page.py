"""The admin page (/admin) in headless Chromium against a demo process with an admin token."""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, Request, Route, expect

from proxy.testing.processes import ManagedProcess, free_port
from tests.browser.conftest import Demo

ADMIN = "admin-" + secrets.token_urlsafe(24)
TOKEN_KEY = "layers-proxy-admin-token"
NEXT_POLL = re.compile(r"^(in \d+\.\d s|polling now)$")


@pytest.fixture(scope="module")
def admin_demo() -> Iterator[Demo]:
    """A demo process whose proxy has an admin token (one seeded container; tests add theirs)."""
    port, sim_port = free_port(), free_port()
    argv = [sys.executable, "-m", "proxy", "demo", "--port", str(port)]
    argv += ["--sim-port", str(sim_port), "--containers", "1", "--redis-url", "memory://"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROXY_", "LAYERS_"))}
    env |= {"PYTHONUNBUFFERED": "1", "PROXY_ADMIN_TOKEN": ADMIN}
    proc = ManagedProcess("admin-demo", argv, env, port)
    proc.start("proxy listening on", timeout_s=20)
    yield Demo(proc, f"http://127.0.0.1:{sim_port}")
    assert proc.stop() == 0, proc.output()


def admin_state(demo: Demo) -> dict[str, Any]:
    """The feed, read as the page reads it (Bearer header)."""
    request = urllib.request.Request(
        demo.url + "/admin/state", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


def watch_in_another_tab(page: Page, demo: Demo, container_id: str) -> Page:
    """Open the one-element example page for ``container_id`` (so the proxy polls it)."""
    tab = page.context.new_page()
    tab.goto(f"{demo.url}/static/example.html?container={container_id}")
    return tab


def connect(page: Page, demo: Demo, token: str) -> None:
    """Open /admin and submit ``token``."""
    page.goto(demo.url + "/admin")
    expect(page.locator("body")).to_have_attribute("data-state", "need-token")
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Connect").click()


def next_poll_changes(page: Page, key: str, timeout_ms: int = 10_000) -> str:
    """Wait until the row's "Next poll" cell shows something else; return the new text."""
    cell = f'#resources-table tbody tr[data-key="{key}"] td:nth-of-type(3)'
    before = page.locator(cell).inner_text()
    page.wait_for_function(
        "([selector, before]) => {"
        " const cell = document.querySelector(selector);"
        " return cell !== null && cell.textContent !== before; }",
        arg=[cell, before],
        timeout=timeout_ms,
    )
    return page.locator(cell).inner_text()


@pytest.mark.browser
@pytest.mark.timeout(60)
def test_the_table_fills_with_the_watched_resource_and_updates(
    admin_demo: Demo, page: Page
) -> None:
    """With the token the page shows the lease held here, its 2 s cadence and a moving next poll."""
    cid = admin_demo.container([["generating_visuals", 300.0]])
    key = f"progress:-:{cid}"
    sent: list[Request] = []
    page.on("request", lambda request: sent.append(request))
    tab = watch_in_another_tab(page, admin_demo, cid)

    connect(page, admin_demo, ADMIN)
    row = page.locator(f'#resources-table tbody tr[data-key="{key}"]')
    expect(row).to_have_attribute("data-lease", "here", timeout=15_000)
    expect(page.locator("body")).to_have_attribute("data-state", "live")
    expect(row.get_by_role("rowheader")).to_have_text(f"progress {cid}")
    expect(row.locator("td").nth(0)).to_have_text(re.compile(r"^held here \(fence \d+\)$"))
    expect(row.locator("td").nth(1)).to_have_text("2.0 s")  # the cadence
    expect(row.locator("td").nth(4)).to_have_text("ok (200)")  # the last upstream answer
    # Each refresh shows a new countdown (a 1 s refresh of a 2 s cadence may repeat two values).
    seen = [row.locator("td").nth(2).inner_text()]
    seen += [next_poll_changes(page, key) for _ in range(3)]
    assert all(NEXT_POLL.match(text) for text in seen), seen

    state = admin_state(admin_demo)
    expect(page.locator("#replica-id")).to_have_text(state["replica"]["id"])
    expect(page.get_by_role("table", name=re.compile("resources on this replica"))).to_be_visible()
    for header in ("Resource", "Lease", "Cadence", "Next poll", "Last upstream answer"):
        expect(page.get_by_role("columnheader", name=header, exact=True)).to_be_visible()
    redis_table = page.locator("#redis-table")
    expect(redis_table.get_by_role("row", name=re.compile("^Address"))).to_contain_text("embedded")
    expect(redis_table.get_by_role("row", name=re.compile("^State"))).to_contain_text("up")
    budget_table = page.locator("#budget-table")
    expect(budget_table.get_by_role("row", name=re.compile("^Tier"))).to_contain_text("1,200")

    # The token is kept in this tab's sessionStorage and sent as a header, never in a URL.
    assert page.evaluate("(k) => sessionStorage.getItem(k)", TOKEN_KEY) == ADMIN
    feeds = [r for r in sent if r.url.endswith("/admin/state")]
    assert len(feeds) >= 3
    assert all(r.headers.get("authorization") == f"Bearer {ADMIN}" for r in feeds)
    assert not [r.url for r in sent if ADMIN in r.url]
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-state", "live", timeout=10_000)
    tab.close()


@pytest.mark.browser
@pytest.mark.timeout(30)
def test_a_wrong_token_shows_the_error_and_no_data(admin_demo: Demo, page: Page) -> None:
    """A refused token says so (401), hides the tables and forgets the token."""
    connect(page, admin_demo, "not-the-admin-token")
    expect(page.locator("body")).to_have_attribute("data-state", "unauthorized")
    expect(page.get_by_role("status")).to_have_text(re.compile(r"^Wrong admin token: .*401"))
    expect(page.locator("#resources-table")).to_be_hidden()
    expect(page.locator("#replica-id")).to_have_text("not connected")
    expect(page.get_by_label("Admin token")).to_be_focused()
    assert page.evaluate("(k) => sessionStorage.getItem(k)", TOKEN_KEY) is None


@pytest.mark.browser
@pytest.mark.timeout(30)
def test_a_failing_feed_is_shown_and_the_page_recovers(admin_demo: Demo, page: Page) -> None:
    """While /admin/state fails the page says so and keeps retrying; then it is live again."""
    connect(page, admin_demo, ADMIN)
    expect(page.locator("body")).to_have_attribute("data-state", "live", timeout=10_000)

    def unavailable(route: Route) -> None:
        body = {"error": {"code": "UNAVAILABLE", "message": "balancer says no"}}
        route.fulfill(status=503, content_type="application/json", body=json.dumps(body))

    page.route("**/admin/state", unavailable)
    expect(page.locator("body")).to_have_attribute("data-state", "failed", timeout=5_000)
    expect(page.get_by_role("status")).to_have_text(
        re.compile(r"^Feed failed at .*: HTTP 503: balancer says no\. Retrying")
    )
    page.unroute("**/admin/state", unavailable)
    expect(page.locator("body")).to_have_attribute("data-state", "live", timeout=5_000)
    expect(page.get_by_role("status")).to_have_text(re.compile(r"^Live: replica "))
