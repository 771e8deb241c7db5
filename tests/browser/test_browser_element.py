"""The <layers-progress> element and its client against the demo on a six-times-faster clock."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, Request, Route, expect

from tests.browser.conftest import Demo

TERMINAL = {"completed", "failed", "canceled"}
RECORD_STATES = """
window.__seen = {};
new MutationObserver((records) => {
  for (const { target } of records) {
    if (target.localName !== "layers-progress") continue;
    const id = target.getAttribute("container-id");
    (window.__seen[id] ??= []).push(`${target.dataset.state}:${target.dataset.stage}`);
  }
}).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-state"] });
"""


def open_example(page: Page, demo: Demo, container_id: str, **params: str) -> None:
    """Open the one-element example page for ``container_id``."""
    query = "".join(f"&{name}={value}" for name, value in params.items())
    page.goto(f"{demo.url}/static/example.html?container={container_id}{query}")


def wait_state(page: Page, state: str, timeout_ms: int = 15_000) -> None:
    """Wait until the example's element reaches ``state``."""
    page.wait_for_function(
        "(s) => document.querySelector('layers-progress').dataset.state === s",
        arg=state,
        timeout=timeout_ms,
    )


@pytest.mark.browser
@pytest.mark.timeout(60)
def test_bars_advance_through_stages_and_finish(fast_demo: Demo, page: Page) -> None:
    """On the demo page every bar moves through stages and ends where the simulator ended it."""
    page.add_init_script(RECORD_STATES)
    page.goto(fast_demo.url + "/demo")
    page.wait_for_function(
        "(t) => { const all = [...document.querySelectorAll('layers-progress')];"
        " return all.length === 6 && all.every((el) => t.includes(el.dataset.state)); }",
        arg=sorted(TERMINAL),
        timeout=40_000,
    )
    seen: dict[str, list[str]] = page.evaluate("window.__seen")
    shown = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('layers-progress')]"
        ".map((el) => [el.getAttribute('container-id'), el.dataset.state]))"
    )
    sim = fast_demo.sim_containers()
    ended = {c["containerId"]: c["status"] for c in sim if c["containerId"] in shown}
    assert shown == ended
    assert any(s.startswith("running:") for states in seen.values() for s in states)
    stages = [{s for s in states if s.startswith("running:")} for states in seen.values()]
    assert max(len(s) for s in stages) >= 2, seen


@pytest.mark.browser
@pytest.mark.timeout(30)
def test_failed_container_shows_failure_and_last_error(fast_demo: Demo, page: Page) -> None:
    """A failed run reads "Failed", names the stage, and shows the lastError code and message."""
    cid = fast_demo.container([["generating_visuals", 6], ["finalizing", 6]], ending="failed")
    page.emulate_media(reduced_motion="reduce")
    open_example(page, fast_demo, cid)
    wait_state(page, "failed")

    element = page.locator("layers-progress")
    expect(element.locator(".title")).to_have_text("Failed")
    expect(element.locator(".detail")).to_have_text("Stopped during Finalizing")
    bar = page.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuetext", re.compile(r"^Stopped during Finalizing"))
    # The proxy adds the container's lastError to a failed container's final stream event.
    snapshot: dict[str, Any] = element.evaluate("el => el.snapshot")
    code, message = snapshot["lastError"]["code"], snapshot["lastError"]["message"]
    expect(element.locator(".problem")).to_have_text(f"{code} {message}")
    expect(bar).to_have_attribute("aria-valuetext", re.compile(re.escape(f"{code}: {message}")))
    assert (
        element.locator(".fill").evaluate("el => getComputedStyle(el).transitionDuration") == "0s"
    )


@pytest.mark.browser
@pytest.mark.timeout(30)
def test_canceled_container_shows_canceled(fast_demo: Demo, page: Page) -> None:
    """A canceled run reads "Canceled" with the stage it stopped after, and no ETA."""
    cid = fast_demo.container([["generating_visuals", 6], ["finalizing", 6]], ending="canceled")
    open_example(page, fast_demo, cid)
    wait_state(page, "canceled")
    element = page.locator("layers-progress")
    expect(element.locator(".title")).to_have_text("Canceled")
    expect(element.locator(".detail")).to_have_text("Stopped after Generating visuals")
    expect(element.locator(".eta")).to_be_hidden()
    expect(element.locator(".problem")).to_be_hidden()


@pytest.mark.browser
@pytest.mark.timeout(30)
def test_unknown_container_is_a_terminal_error(fast_demo: Demo, page: Page) -> None:
    """An id the API does not know ends in the error state with the envelope's code."""
    open_example(page, fast_demo, "cnt_00000000-0000-4000-8000-00000000dead")
    wait_state(page, "error")
    element = page.locator("layers-progress")
    expect(element.locator(".title")).to_have_text("Not found")
    expect(element.locator(".problem")).to_contain_text("NOT_FOUND")


@pytest.mark.browser
@pytest.mark.timeout(40)
def test_polling_fallback_without_eventsource(fast_demo: Demo, page: Page) -> None:
    """Without EventSource the element polls with If-None-Match and still reaches the end."""
    cid = fast_demo.container([["generating_visuals", 18], ["finalizing", 6]])
    before = fast_demo.stats()["proxy"]
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))
    page.add_init_script("delete window.EventSource")
    open_example(page, fast_demo, cid)
    wait_state(page, "completed", timeout_ms=25_000)

    after = fast_demo.stats()["proxy"]
    polls = [r for r in requests if f"/v1/content/{cid}/progress" in r.url]
    assert not [r for r in requests if "stream" in r.url]
    assert len(polls) >= 2
    assert all("if-none-match" in r.headers for r in polls[1:])
    assert after["client_requests"] - before["client_requests"] >= len(polls)
    assert after["stream_events"] == before["stream_events"]
    assert after["streams_open"] == 0


@pytest.mark.browser
@pytest.mark.timeout(20)
def test_stage_names_are_humanised(fast_demo: Demo, page: Page) -> None:
    """Open-ended stage strings read as words, with common acronyms in capitals."""
    page.goto(fast_demo.url + "/static/example.html")
    names = page.evaluate(
        "import('/static/layers-progress.js').then((m) => ["
        "'generating_visuals', 'generating_sdk_patch', 'opening_pr', 'some-new-stage', null"
        "].map(m.humanise))"
    )
    assert names == [
        "Generating visuals",
        "Generating SDK patch",
        "Opening PR",
        "Some new stage",
        "",
    ]


@pytest.mark.browser
@pytest.mark.timeout(30)
def test_stream_blocked_by_a_middlebox_falls_back_to_polling(fast_demo: Demo, page: Page) -> None:
    """When something in between refuses the event streams, the element polls instead."""
    cid = fast_demo.container([["generating_visuals", 12], ["finalizing", 6]])
    blocked: list[str] = []

    def refuse(route: Route) -> None:
        blocked.append(route.request.url)
        route.fulfill(status=403, content_type="text/html", body="<h1>Blocked by policy</h1>")

    page.route("**/*stream*", refuse)
    open_example(page, fast_demo, cid)
    wait_state(page, "completed", timeout_ms=20_000)
    assert blocked, "the element should have tried the stream first"


WATCH_BOTH = """async ([cid, jid]) => {
  const { watchProgress, watchJob } = await import("/static/layers-progress.js");
  const follow = (watch, id) => new Promise((resolve, reject) => {
    const seen = { updates: [], done: [] };
    watch(id, {
      onUpdate: (body) => seen.updates.push(body),
      onDone: (body) => { seen.done.push(body); setTimeout(() => resolve(seen), 500); },
      onError: (err) => reject(err),
    });
  });
  return Promise.all([follow(watchProgress, cid), follow(watchJob, jid)]);
}"""


@pytest.mark.browser
@pytest.mark.timeout(30)
def test_watch_progress_and_watch_job_stream_to_the_end(fast_demo: Demo, page: Page) -> None:
    """watchProgress and watchJob stream each snapshot, then call onDone exactly once."""
    cid, jid = fast_demo.container_and_job([["generating_visuals", 12], ["finalizing", 6]])
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.goto(fast_demo.url + "/static/example.html")
    progress, job = page.evaluate(WATCH_BOTH, [cid, jid])

    assert [body["status"] for body in progress["done"]] == ["completed"]
    assert progress["updates"][-1] == progress["done"][0]
    assert all(body["containerId"] == cid for body in progress["updates"])
    assert [body["status"] for body in job["done"]] == ["completed"]
    fractions = [body.get("progress", 1.0) for body in job["updates"]]
    assert fractions == sorted(fractions)
    assert any(url.endswith(f"/v1/content/{cid}/progress/stream") for url in urls)
    assert any(url.endswith(f"/v1/jobs/{jid}/stream") for url in urls)
