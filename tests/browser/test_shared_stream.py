"""Ten tabs of one browser, one stream: Web Locks elect a leader, a BroadcastChannel relays.

Every page opens /static/shared-example.html on the same containers; the proxy's own counter
(streams_open) and the requests the browser made say how many streams there are.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request

from proxy.simulator.state import DEFAULT_KEY
from tests.browser.conftest import Demo, StartDemo

TERMINAL = {"completed", "failed", "canceled"}
# Six-times-faster clock: 7 s, then 5 s per stage, far longer than the proxy's 2 s cadence.
STAGES: list[list[Any]] = [
    ["generating_visuals", 42],
    ["generating_sdk_patch", 30],
    ["opening_pr", 30],
    ["finalizing", 30],
]
STAGE_NAMES = [name for name, _ in STAGES]
ENDINGS = ["completed", "completed", "failed"]
# Every change of each element's (state, stage), per container id, in the order it happened.
RECORD = """
window.__seen = {};
new MutationObserver((records) => {
  for (const { target } of records) {
    if (target.localName !== "layers-progress" || !target.dataset.state) continue;
    const seen = (window.__seen[target.getAttribute("container-id")] ??= []);
    const now = `${target.dataset.state}:${target.dataset.stage}`;
    if (seen.at(-1) !== now) seen.push(now);
  }
}).observe(document, { subtree: true, attributes: true,
                       attributeFilter: ["data-state", "data-stage"] });
"""
SHOWN = """() => Object.fromEntries([...document.querySelectorAll("layers-progress")].map(
  (el) => [el.getAttribute("container-id"), [el.dataset.state ?? null, el.dataset.stage ?? null,
                                             JSON.stringify(el.snapshot)]]))"""
ALL_TERMINAL = """(t) => { const all = [...document.querySelectorAll("layers-progress")];
  return all.length > 0 && all.every((el) => t.includes(el.dataset.state)); }"""
ALL_SHOWING = """(n) => { const all = [...document.querySelectorAll("layers-progress")];
  return all.length === n && all.every((el) => el.dataset.state); }"""


@pytest.fixture(scope="module")
def demo(start_demo: StartDemo) -> Demo:
    """A demo of its own, so the proxy's stream counter sees only this module's tabs."""
    return start_demo(containers=1, speed=6)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """One browser context (one profile: its tabs share locks and channels)."""
    ctx = browser.new_context(viewport={"width": 800, "height": 600})
    ctx.add_init_script(RECORD)
    yield ctx
    ctx.close()


def sim_progress(demo: Demo, cid: str) -> dict[str, Any]:
    """The container's progress as the simulator (the fake Layers API) reports it right now."""
    request = urllib.request.Request(
        f"{demo.sim_url}/v1/content/{cid}/progress", headers={"X-Api-Key": DEFAULT_KEY}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


def streams_open(demo: Demo) -> int:
    """SSE streams the proxy holds open right now."""
    return int(demo.stats()["proxy"]["streams_open"])


def wait_until(check: Callable[[], bool], timeout_s: float, pump: Page, what: str) -> float:
    """Re-check ``check`` until it holds; returns the seconds it took. ``pump`` keeps the
    playwright driver dispatching events (requests) while we wait."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        pump.wait_for_timeout(100)  # the poll interval of this loop, not a synchronisation
    return time.monotonic() - start


def open_tabs(
    context: BrowserContext, demo: Demo, ids: list[str], count: int, query: str = ""
) -> tuple[list[Page], list[str]]:
    """``count`` tabs of the shared example on ``ids``; returns them and their JS errors."""
    errors: list[str] = []
    pages = []
    for _ in range(count):
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{demo.url}/static/shared-example.html?containers={','.join(ids)}{query}")
        pages.append(page)
    for page in pages:
        page.wait_for_function(ALL_SHOWING, arg=len(ids), timeout=15_000)
    return pages, errors


def stream_requests(requests: list[Request]) -> list[Request]:
    """The /v1/stream connects among ``requests``."""
    return [r for r in requests if "/v1/stream" in r.url]


@pytest.mark.browser
@pytest.mark.timeout(120)
def test_ten_tabs_share_one_stream_and_survive_the_leader_closing(
    demo: Demo, context: BrowserContext
) -> None:
    """One stream for ten tabs; when the leader tab closes another takes over, nothing skipped."""
    ids = [demo.container(STAGES, ending) for ending in ENDINGS]
    requests: list[Request] = []
    context.on("request", lambda request: requests.append(request))
    pages, errors = open_tabs(context, demo, ids, 10)

    # Every tab shows what the simulator says now, and there is exactly one stream.
    def all_agree() -> bool:
        before = {cid: sim_progress(demo, cid)["stage"] for cid in ids}
        shown = [page.evaluate(SHOWN) for page in pages]
        after = {cid: sim_progress(demo, cid)["stage"] for cid in ids}
        same_everywhere = all(s == shown[0] for s in shown)
        return (
            before == after
            and same_everywhere
            and all(shown[0][cid][1] == before[cid] for cid in ids)
        )

    agreed_s = wait_until(all_agree, 15, pages[0], "all ten tabs show the simulator's stages")
    assert streams_open(demo) == 1
    first = stream_requests(requests)
    assert len(first) == 1, [r.url for r in first]
    leader = first[0].frame.page
    assert leader in pages
    shown_stage = pages[0].evaluate(SHOWN)[ids[0]][1]
    assert shown_stage != STAGE_NAMES[-1], "the takeover must happen before the last stage"

    # The leader goes away: another tab opens the stream, resuming from the last event id.
    closed_at = time.monotonic()
    with context.expect_event(
        "request", predicate=lambda r: "/v1/stream" in r.url, timeout=5_000
    ) as takeover:
        leader.close()
    takeover_s = time.monotonic() - closed_at
    rest = [page for page in pages if page is not leader]
    new_leader = takeover.value.frame.page
    assert new_leader in rest
    last_id = re.search(r"[?&]lastEventId=([0-9.]+)", takeover.value.url)
    assert last_id is not None, takeover.value.url
    assert len(last_id.group(1).split(".")) == len(ids)
    wait_until(lambda: streams_open(demo) == 1, 5, rest[0], "one stream open after takeover")

    # Every remaining tab reaches the end, while one stream at most is ever open.
    samples: list[int] = []

    def all_done() -> bool:
        samples.append(streams_open(demo))
        return all(page.evaluate(ALL_TERMINAL, sorted(TERMINAL)) for page in rest)

    wait_until(all_done, 40, rest[0], "every tab shows a terminal state")
    assert max(samples) <= 1, samples
    assert len(stream_requests(requests)) == 2, [r.url for r in stream_requests(requests)]

    ended = {cid: sim_progress(demo, cid) for cid in ids}
    assert [ended[cid]["status"] for cid in ids] == ENDINGS
    for page in rest:
        seen: dict[str, list[str]] = page.evaluate("window.__seen")
        shown = page.evaluate(SHOWN)
        for cid in ids:
            stages = [entry.split(":", 1)[1] for entry in seen[cid]]
            distinct = [s for n, s in enumerate(stages) if n == 0 or stages[n - 1] != s]
            assert distinct == STAGE_NAMES[: STAGE_NAMES.index(ended[cid]["stage"]) + 1], seen
            assert shown[cid][0] == ended[cid]["status"], shown
    assert not errors, errors
    print(f"agreed after {agreed_s:.1f} s; takeover {takeover_s:.2f} s; samples {len(samples)}")


@pytest.mark.browser
@pytest.mark.timeout(60)
def test_share_false_gives_every_tab_its_own_stream(demo: Demo, context: BrowserContext) -> None:
    """With share=false three tabs open three streams, and each still follows the progress."""
    ids = [demo.container([["generating_visuals", 60]])]
    requests: list[Request] = []
    context.on("request", lambda request: requests.append(request))
    pages, errors = open_tabs(context, demo, ids, 3, "&share=false")
    wait_until(lambda: streams_open(demo) == 3, 10, pages[0], "three streams open")
    assert {r.frame.page for r in stream_requests(requests)} == set(pages)
    assert len(stream_requests(requests)) == 3
    assert not errors, errors


@pytest.mark.browser
@pytest.mark.timeout(60)
def test_without_web_locks_every_tab_streams_alone(demo: Demo, context: BrowserContext) -> None:
    """A browser without navigator.locks gets a private stream per tab, not a broken page."""
    context.add_init_script(
        "Object.defineProperty(Navigator.prototype, 'locks', { get: () => undefined })"
    )
    ids = [demo.container([["generating_visuals", 60]])]
    requests: list[Request] = []
    context.on("request", lambda request: requests.append(request))
    pages, errors = open_tabs(context, demo, ids, 2)
    assert pages[0].evaluate("navigator.locks") is None
    wait_until(lambda: streams_open(demo) == 2, 10, pages[0], "two streams open")
    assert {r.frame.page for r in stream_requests(requests)} == set(pages)
    assert not errors, errors


# Records the type of every message a tab's channels receive.
RECORD_CHANNEL = """
window.__channel = [];
window.BroadcastChannel = class extends BroadcastChannel {
  constructor(name) {
    super(name);
    this.addEventListener("message", (e) => window.__channel.push(
      [e.data?.t, e.data?.events?.length ?? null]));
  }
};
"""


@pytest.mark.browser
@pytest.mark.timeout(60)
def test_a_new_tab_shows_the_current_state_at_once(demo: Demo, context: BrowserContext) -> None:
    """A tab joining a running group gets the leader's latest state over the channel."""
    context.add_init_script(RECORD_CHANNEL)
    ids = [demo.container([["generating_visuals", 90]])]
    requests: list[Request] = []
    context.on("request", lambda request: requests.append(request))
    (first,), errors = open_tabs(context, demo, ids, 1)
    (second,), more_errors = open_tabs(context, demo, ids, 1)
    assert second.evaluate(SHOWN)[ids[0]][0] == "running"
    # The state came from the leader in answer to the newcomer's hello, before any relayed
    # event, and the newcomer opened no stream of its own.
    received = second.evaluate("window.__channel")
    assert ["state", 1] in received, received
    assert [r.frame.page for r in stream_requests(requests)] == [first]
    names = second.evaluate(
        "navigator.locks.query().then((q) => [...q.held, ...q.pending].map((l) => l.name))"
    )
    assert len(names) == 2, names  # the leader's lock and the newcomer's place in its queue
    assert all(re.fullmatch(r"layers-progress:[0-9a-f]{64}", n) for n in names), names
    assert len(set(names)) == 1, names
    assert not errors + more_errors, errors + more_errors


@pytest.mark.browser
@pytest.mark.timeout(60)
def test_a_tab_joining_late_gets_finished_containers_too(
    demo: Demo, context: BrowserContext
) -> None:
    """The leader keeps the final event of a container that ended for tabs that join later."""
    short = demo.container([["generating_visuals", 12]])  # 2 s at the demo's clock
    long = demo.container([["generating_visuals", 120]])
    requests: list[Request] = []
    context.on("request", lambda request: requests.append(request))
    (first,), errors = open_tabs(context, demo, [short, long], 1)
    first.wait_for_function(
        "(id) => document.querySelector(`[container-id='${id}']`).dataset.state === 'completed'",
        arg=short,
        timeout=15_000,
    )
    (second,), more_errors = open_tabs(context, demo, [short, long], 1)
    shown = second.evaluate(SHOWN)
    assert [shown[short][0], shown[long][0]] == ["completed", "running"], shown
    assert [r.frame.page for r in stream_requests(requests)] == [first]
    assert not errors + more_errors, errors + more_errors
