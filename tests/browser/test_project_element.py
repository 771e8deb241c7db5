"""<layers-project-progress> and watchProject() in headless Chromium.

Against the demo (a six-times-faster simulator clock, the project's content list polled every
2 s): every container of a project shows up, one created after the page opened appears without a
reload, bars advance and end where the simulator ended them, ended rows stay; the poll transport
too. Against a token-mode proxy: the element uses a project token from getToken() and sends
nothing without one. The client's handling of the project stream's events is also checked on a
scripted stream (a route of the page), so it does not depend on the proxy's stream endpoint.

The page under test is a route of the browser context at the proxy's origin (so the real
/static/ modules load from the proxy): /test/project.html?project=…&transport=…&token-url=….
"""

from __future__ import annotations

import json
import re
import secrets
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, Response, Route, expect

from proxy.simulator.state import DEFAULT_KEY
from proxy.tenancy.tokens import mint_token
from proxy.testing.processes import (
    ManagedProcess,
    free_port,
    start_proxy,
    start_simulator,
    write_config,
)
from tests.browser.conftest import Demo, StartDemo, call
from tests.conftest import Sim

TERMINAL = ["canceled", "completed", "failed"]
PAGE_PATH = "/test/project.html"
# The page under test: one <layers-project-progress> configured from the query string, and a
# record of every (state:stage) each row's bar went through (window.__seen, by container id).
PAGE_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>project view under test</title>
<link rel="icon" href="data:,">
<script type="module">
import "/static/layers-project-progress.js";
const params = new URLSearchParams(location.search);
window.__seen = {};
const note = (bar) => {
  if (bar?.localName !== "layers-progress" || !bar.dataset.state) return;
  const seen = (window.__seen[bar.getAttribute("container-id")] ??= []);
  const now = `${bar.dataset.state}:${bar.dataset.stage}`;
  if (seen.at(-1) !== now) seen.push(now);
};
const view = document.createElement("layers-project-progress");
for (const name of ["transport", "token", "share", "base-url", "label"]) {
  if (params.has(name)) view.setAttribute(name, params.get(name));
}
const tokenUrl = params.get("token-url");
if (tokenUrl) {
  view.getToken = async () => {
    const response = await fetch(tokenUrl, { cache: "no-store" });
    if (!response.ok) throw new Error(`token endpoint answered HTTP ${response.status}`);
    return (await response.text()).trim();
  };
}
new MutationObserver((records) => {
  for (const record of records) {
    note(record.target);
    for (const node of record.addedNodes) note(node.querySelector?.("layers-progress"));
  }
}).observe(view.shadowRoot, { subtree: true, childList: true, attributes: true,
                              attributeFilter: ["data-state", "data-stage"] });
view.setAttribute("project-id", params.get("project") ?? "");
document.body.append(view);
</script></head><body><h1>Project</h1></body></html>
"""
# Each row of the view in document order: [containerId, row state, bar state, stage, valuenow].
ROWS = """() => {
  const view = document.querySelector("layers-project-progress");
  return [...view.shadowRoot.querySelectorAll("li")].map((li) => {
    const bar = li.querySelector("layers-progress");
    const meter = bar.shadowRoot.querySelector("[role=progressbar]");
    return [li.dataset.containerId, li.dataset.state ?? null, bar.dataset.state ?? null,
            bar.dataset.stage ?? null, Number(meter.getAttribute("aria-valuenow"))];
  });
}"""
ROWS_IN = """([ids, states]) => {
  const view = document.querySelector("layers-project-progress");
  const rows = new Map([...view.shadowRoot.querySelectorAll("li")].map(
    (li) => [li.dataset.containerId, li.dataset.state]));
  const fits = (id) => (states === null ? rows.get(id) : states.includes(rows.get(id)));
  return ids.every((id) => rows.has(id) && fits(id));
}"""


def new_project() -> str:
    """A fresh project id (the simulator creates a project with its first container)."""
    return f"prj_{uuid.uuid4()}"


def sim_container(sim_url: str, project: str, stages: list[list[Any]], **extra: Any) -> str:
    """Start a scripted container of ``project`` on the simulator; return its id."""
    body = {"projectId": project, "stages": stages, "queued_s": 0, **extra}
    made: dict[str, str] = call(sim_url + "/_sim/containers", body)
    return made["containerId"]


def sim_statuses(sim_url: str) -> dict[str, str]:
    """containerId → the simulator's current status, for every container."""
    return {c["containerId"]: c["status"] for c in call(sim_url + "/_sim/containers")["containers"]}


def serve_page(context: BrowserContext, base: str) -> None:
    """Answer /test/project.html at ``base`` (the proxy's origin) with the page under test."""
    context.route(
        f"{base}{PAGE_PATH}*",
        lambda route: route.fulfill(status=200, content_type="text/html", body=PAGE_HTML),
    )


def open_view(page: Page, base: str, project: str, **params: str) -> None:
    """Open the page under test on ``project`` (``params`` become query parameters)."""
    serve_page(page.context, base)
    query = "".join(f"&{name}={quote(value, safe='')}" for name, value in params.items())
    page.goto(f"{base}{PAGE_PATH}?project={project}{query}")


def rows(page: Page) -> list[list[Any]]:
    """The view's rows, as ROWS describes them."""
    found: list[list[Any]] = page.evaluate(ROWS)
    return found


def wait_rows(
    page: Page, ids: list[str], states: list[str] | None = None, timeout_ms: int = 20_000
) -> None:
    """Wait until every one of ``ids`` has a row (in one of ``states``, when given)."""
    page.wait_for_function(ROWS_IN, arg=[ids, states], timeout=timeout_ms)


def seen(page: Page) -> dict[str, list[str]]:
    """Every (state:stage) each row's bar went through."""
    history: dict[str, list[str]] = page.evaluate("window.__seen")
    return history


def running_stages(history: list[str]) -> list[str]:
    """The distinct stages a bar showed while running, in order (a row can come before its
    first progress body, from the stream's `event: container`: no stage yet)."""
    stages = [entry.split(":", 1)[1] for entry in history if entry.startswith("running:")]
    stages = [s for s in stages if s]
    return [s for n, s in enumerate(stages) if n == 0 or stages[n - 1] != s]


def api_requests(requests: list[Request]) -> list[Request]:
    """The requests to the proxy's /v1/ API among ``requests``."""
    return [r for r in requests if urlsplit(r.url).path.startswith("/v1/")]


def wait_until(check: Callable[[], bool], timeout_s: float, pump: Page, what: str) -> float:
    """Re-check ``check`` until it holds (``pump`` keeps playwright's events flowing)."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        pump.wait_for_timeout(100)  # the poll interval of this loop, not a synchronisation
    return time.monotonic() - start


def stream_available(base: str, project: str, token: str | None = None) -> bool:
    """Does this proxy serve /v1/projects/{id}/stream (for a project the simulator has)?"""
    query = f"?access_token={token}" if token else ""
    request = urllib.request.Request(f"{base}/v1/projects/{project}/stream{query}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            content_type: str = response.headers.get("Content-Type", "")
            return content_type.startswith("text/event-stream")
    except (urllib.error.URLError, TimeoutError):
        return False


@pytest.fixture(scope="module")
def demo(start_demo: StartDemo) -> Demo:
    """A demo of its own (six-times-faster clock), so other modules' counters are not ours."""
    return start_demo(containers=1, speed=6)


# Six-times-faster clock: each stage takes 4-5 s, longer than the 2 s list and progress cadence.
STAGES: list[list[Any]] = [["generating_visuals", 27], ["opening_pr", 24], ["finalizing", 24]]
SHORT: list[list[Any]] = [["generating_visuals", 24], ["finalizing", 12]]
# A scripted failure strikes at 30% of its stage: 80 s of finalizing is 4 s of real time before
# the failure, two cadences, so the bar shows the stage before it fails (latest wins would
# rightly skip a shorter one).
FAILING: list[list[Any]] = [["generating_visuals", 27], ["opening_pr", 24], ["finalizing", 80]]


@pytest.mark.browser
@pytest.mark.timeout(90)
def test_element_follows_every_container_of_its_project(demo: Demo, page: Page) -> None:
    """Every container of the project, none of another; a late one appears without a reload;
    bars advance through stages and end as the simulator ended them; ended rows stay, after the
    rows still in flight."""
    project, other = new_project(), new_project()
    short = sim_container(demo.sim_url, project, SHORT)
    failing = sim_container(demo.sim_url, project, FAILING, ending="failed")
    stranger = sim_container(demo.sim_url, other, STAGES)
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))
    open_view(page, demo.url, project, label="Launch videos")
    wait_rows(page, [short, failing], timeout_ms=15_000)
    opened_at = time.monotonic()

    late = sim_container(demo.sim_url, project, STAGES, ending="canceled")
    wait_rows(page, [late], timeout_ms=15_000)
    late_after_s = time.monotonic() - opened_at
    # The short one ends first: it stays listed, after the two still in flight.
    wait_rows(page, [short], ["completed"], timeout_ms=20_000)
    order = [row[0] for row in rows(page)]
    states = {row[0]: row[1] for row in rows(page)}
    assert states[failing] == states[late] == "running", states
    assert order == [failing, late, short], (order, states)
    wait_rows(page, [short, failing, late], TERMINAL, timeout_ms=40_000)

    final = rows(page)
    sim = sim_statuses(demo.sim_url)
    assert {row[0]: row[1] for row in final} == {cid: sim[cid] for cid in (short, failing, late)}
    assert {row[0]: row[2] for row in final} == {row[0]: row[1] for row in final}
    assert stranger not in [row[0] for row in final]
    assert [row[4] for row in final if row[0] == short] == [100]
    history = seen(page)
    assert running_stages(history[failing]) == [name for name, _ in FAILING], history[failing]
    assert len(running_stages(history[late])) >= 2, history[late]
    assert late_after_s < 10, late_after_s  # the list is polled every 2 s
    # The view is one list named after the project, each row a labelled progressbar.
    view = page.get_by_role("list", name="Launch videos")
    expect(view.get_by_role("listitem")).to_have_count(3)
    bars = view.get_by_role("progressbar")
    expect(bars).to_have_count(3)
    texts = {"completed": "Done", "failed": "Stopped during Finalizing", "canceled": "Stopped"}
    for index, row in enumerate(final):
        text = re.compile("^" + re.escape(texts[row[1]]))
        expect(bars.nth(index)).to_have_attribute("aria-valuetext", text)
    expect(page.locator("layers-project-progress")).to_have_attribute("data-count", "3")
    summary = page.locator("layers-project-progress .summary")
    expect(summary).to_have_text("1 completed · 1 failed · 1 canceled")
    assert not [r.url for r in api_requests(requests) if other in r.url]


@pytest.mark.browser
@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["attribute", "no-eventsource"])
def test_poll_transport_with_etag(demo: Demo, page: Page, how: str) -> None:
    """transport="poll" (or no EventSource at all): the element polls the project's progress
    with If-None-Match, shows each container to its end, and a 304 changes nothing."""
    project = new_project()
    first = sim_container(demo.sim_url, project, SHORT)
    requests: list[Request] = []
    responses: list[Response] = []
    page.on("request", lambda request: requests.append(request))
    page.on("response", lambda response: responses.append(response))
    if how == "no-eventsource":
        page.add_init_script("delete window.EventSource")
        open_view(page, demo.url, project)
    else:
        open_view(page, demo.url, project, transport="poll")
    wait_rows(page, [first], timeout_ms=15_000)
    second = sim_container(demo.sim_url, project, SHORT, ending="failed")
    wait_rows(page, [first, second], TERMINAL, timeout_ms=30_000)
    before = rows(page)
    # Once everything has ended, the list stops changing: the proxy answers 304.
    path = f"/v1/projects/{project}/progress"
    not_modified = lambda: any(  # noqa: E731
        r.status == 304 and urlsplit(r.url).path == path for r in responses
    )
    wait_until(not_modified, 15, page, "a 304 for the project's progress")

    api = api_requests(requests)
    polls = [r for r in api if urlsplit(r.url).path == path]
    assert not [r.url for r in api if "stream" in r.url]
    assert not [r.url for r in api if urlsplit(r.url).path != path]
    assert len(polls) >= 3, len(polls)
    assert all("if-none-match" in r.headers for r in polls[1:])
    sim = sim_statuses(demo.sim_url)
    assert {row[0]: row[1] for row in rows(page)} == {first: sim[first], second: sim[second]}
    assert rows(page) == before


@pytest.mark.browser
@pytest.mark.timeout(90)
def test_demo_page_project_run(demo: Demo, page: Page) -> None:
    """The demo page's project view: "Start a project run" adds three containers of the demo
    project, which appear as rows without a reload and end as the simulator ended them."""
    page.goto(demo.url + "/demo")
    view = page.locator("#project-view")
    project = call(demo.url + "/demo/api/project")
    expect(view).to_have_attribute("project-id", project["projectId"])
    expect(view).to_have_attribute("data-state", "live", timeout=15_000)
    before = set(project["containers"])

    page.get_by_role("button", name="Start a project run").click()
    expect(page.locator("#project-note")).to_contain_text("Started 3 containers")
    started = [
        cid for cid in call(demo.url + "/demo/api/project")["containers"] if cid not in before
    ]
    assert len(started) == 3
    wait_rows(page, started, timeout_ms=15_000)
    wait_rows(page, started, TERMINAL, timeout_ms=40_000)
    sim = sim_statuses(demo.sim_url)
    shown = {row[0]: row[1] for row in rows(page)}
    assert {cid: shown[cid] for cid in started} == {cid: sim[cid] for cid in started}
    # The batch grid is still the page's only light-DOM <layers-progress> set.
    assert page.evaluate("document.querySelectorAll('#grid layers-progress').length") == 1
    name = f"Demo project {project['projectId']}"
    expect(page.get_by_role("list", name=name).get_by_role("listitem")).to_have_count(len(shown))


# ---- The client on a scripted project stream (no dependency on the proxy's stream) ----

FAKE_PROJECT = "prj_0b7c1f9e-3c1a-4b8e-9d2f-6a5b4c3d2e1f"
A = "cnt_0a000000-0000-4000-8000-00000000000a"
B = "cnt_0b000000-0000-4000-8000-00000000000b"
C = "cnt_0c000000-0000-4000-8000-00000000000c"


def progress(cid: str, status: str, stage: str, fraction: float, at: str) -> dict[str, Any]:
    """A progress body as the proxy sends it."""
    return {
        "containerId": cid,
        "status": status,
        "stage": stage,
        "stageProgress": fraction,
        "etaSeconds": None if status in TERMINAL else 30,
        "updatedAt": at,
    }


# What a (re)connect of the project stream sends, then a few changes. `retry` keeps EventSource
# from reconnecting during the test once the scripted body has ended.
SCRIPT: list[tuple[str, dict[str, Any]]] = [
    ("container", {"containerId": A, "status": "processing"}),
    ("progress", progress(A, "processing", "generating_visuals", 0.4, "2026-01-01T00:00:10Z")),
    ("container", {"containerId": B, "status": "completed"}),
    ("progress", progress(B, "completed", "finalizing", 1.0, "2026-01-01T00:00:05Z")),
    ("container", {"containerId": C, "status": "queued"}),
    ("progress", progress(C, "queued", "queued", 0.0, "2026-01-01T00:00:11Z")),
    # Changes after the catch-up: A advances and ends (twice said: by progress and container).
    ("progress", progress(A, "processing", "finalizing", 0.5, "2026-01-01T00:00:20Z")),
    ("progress", progress(A, "failed", "finalizing", 0.5, "2026-01-01T00:00:30Z")),
    ("container", {"containerId": A, "status": "failed"}),
    # One container's error is its row's.
    ("error", {"containerId": C, "error": {"code": "UPSTREAM_ERROR", "message": "Layers 502"}}),
]


def sse_body(script: list[tuple[str, dict[str, Any]]]) -> str:
    """The scripted stream as text/event-stream."""
    frames = [f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in script]
    return "retry: 600000\n\n" + "".join(frames)


@dataclass
class FakeProxy:
    """Routes the project's stream (scripted) and poll (refused) for a browser context."""

    streams: list[Request] = field(default_factory=list)
    polls: list[Request] = field(default_factory=list)

    def stream(self, route: Route) -> None:
        self.streams.append(route.request)
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        route.fulfill(status=200, headers=headers, body=sse_body(SCRIPT))

    def poll(self, route: Route) -> None:
        self.polls.append(route.request)
        route.fulfill(status=503, content_type="application/json", body='{"error":{}}')

    def install(self, context: BrowserContext, base: str) -> None:
        context.route(f"{base}/v1/projects/{FAKE_PROJECT}/stream*", self.stream)
        context.route(f"{base}/v1/projects/{FAKE_PROJECT}/progress*", self.poll)


WATCH_PROJECT = """async ([project]) => {
  const { watchProject } = await import("/static/layers-progress.js");
  const got = { changes: [], containers: [], errors: [] };
  window.__got = got;
  window.__watch = watchProject(project, {
    share: false,
    onChange: (items) => got.changes.push(items.map((i) => [i.containerId, i.status ?? null,
                                                           i.error?.code ?? null])),
    onContainer: (c) => got.containers.push([c.containerId, c.status]),
    onError: (e) => got.errors.push(e.code),
  });
}"""


JOIN_PROJECT = """([project]) => new Promise(async (resolve) => {
  const { watchProject } = await import("/static/layers-progress.js");
  const watch = watchProject(project, {
    share: false,
    onChange: (items) => {
      watch.close();
      resolve(items.map((i) => [i.containerId, i.status ?? null, i.error?.code ?? null]));
    },
  });
})"""


@pytest.mark.browser
@pytest.mark.timeout(30)
def test_watch_project_applies_the_stream(demo: Demo, page: Page) -> None:
    """watchProject on a scripted stream: onContainer once per appearance and end, onChange with
    in-flight containers first (in order of appearance) and ended ones after, newest end first;
    a container's error event becomes its item; no poll."""
    fake = FakeProxy()
    fake.install(page.context, demo.url)
    page.goto(demo.url + "/static/example.html")
    page.evaluate(WATCH_PROJECT, [FAKE_PROJECT])
    page.wait_for_function(
        "() => { const c = window.__got.changes.at(-1);"
        " return c && c.some(([id, , code]) => code === 'UPSTREAM_ERROR'); }",
        timeout=10_000,
    )
    got: dict[str, Any] = page.evaluate("window.__got")
    assert got["containers"] == [
        [A, "processing"],
        [B, "completed"],
        [C, "queued"],
        [A, "failed"],
    ], got["containers"]
    # C (in flight; its latest item is the error) first, then A (ended at :30) before B (:05).
    assert got["changes"][-1] == [
        [C, None, "UPSTREAM_ERROR"],
        [A, "failed", None],
        [B, "completed", None],
    ]
    assert got["errors"] == []
    assert len(fake.streams) == 1 and not fake.polls
    assert f"/v1/projects/{FAKE_PROJECT}/stream" in fake.streams[0].url
    assert page.evaluate("window.__watch.items().length") == 3
    # A second watch of the page joins the same stream where the first one is.
    joined = page.evaluate(JOIN_PROJECT, [FAKE_PROJECT])
    assert joined == got["changes"][-1]
    assert len(fake.streams) == 1 and not fake.polls
    page.evaluate("window.__watch.close()")


@pytest.mark.browser
@pytest.mark.timeout(40)
def test_tabs_share_one_project_stream(demo: Demo, browser: Browser) -> None:
    """Two tabs of one browser on one project: one stream (the tab holding the Web Lock relays
    it), and both show the same rows; share="false" gives a tab a stream of its own."""
    context = browser.new_context(viewport={"width": 800, "height": 600})
    errors: list[str] = []
    try:
        fake = FakeProxy()
        fake.install(context, demo.url)
        serve_page(context, demo.url)
        tabs = []
        for query in ["", "", "&share=false"]:
            tab = context.new_page()
            tab.on("pageerror", lambda exc: errors.append(str(exc)))
            tab.goto(f"{demo.url}{PAGE_PATH}?project={FAKE_PROJECT}{query}")
            wait_rows(tab, [A, B, C], timeout_ms=10_000)
            tabs.append(tab)
        for tab in tabs:
            wait_rows(tab, [A, C, B], ["failed", "error", "completed"], timeout_ms=10_000)
        shown = [[(row[0], row[1]) for row in rows(tab)] for tab in tabs]
        assert shown[0] == shown[1] == shown[2] == [(C, "error"), (A, "failed"), (B, "completed")]
        streamers = [r.frame.page for r in fake.streams]
        assert len(fake.streams) == 2, [r.url for r in fake.streams]
        assert tabs[2] in streamers and len(set(streamers)) == 2
        assert not fake.polls
        problem = tabs[1].locator("layers-project-progress li[data-state=error] .problem")
        expect(problem).to_have_text("UPSTREAM_ERROR Layers 502")
    finally:
        context.close()
    assert not errors, errors


@pytest.mark.browser
@pytest.mark.timeout(60)
def test_real_project_stream_is_used_when_the_proxy_has_it(demo: Demo, page: Page) -> None:
    """With the proxy's /v1/projects/{id}/stream the element streams and does not poll."""
    project = new_project()
    cid = sim_container(demo.sim_url, project, SHORT)
    if not stream_available(demo.url, project):
        pytest.skip("this proxy has no /v1/projects/{id}/stream yet")
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))
    open_view(page, demo.url, project)
    wait_rows(page, [cid], TERMINAL, timeout_ms=30_000)
    late = sim_container(demo.sim_url, project, SHORT)
    wait_rows(page, [late], TERMINAL, timeout_ms=30_000)
    api = api_requests(requests)
    assert [urlsplit(r.url).path for r in api] == [f"/v1/projects/{project}/stream"]
    assert running_stages(seen(page)[late]), seen(page)[late]


# ---- Token mode: a project token, from getToken(), on every request ----

ACME_SECRET = "acme-project-secret-" + secrets.token_hex(24)
TTL_S = 4


@dataclass
class TokenProxy:
    """A simulator (real clock) and a token-mode proxy."""

    sim: Sim
    proxy: ManagedProcess

    @property
    def url(self) -> str:
        return self.proxy.url


@pytest.fixture(scope="module")
def token_proxy() -> Iterator[TokenProxy]:
    """Simulator + proxy in token mode with one tenant, acme; project lists polled every 1 s."""
    sim_proc = start_simulator(args=["--rate-per-min", "100000"])
    port = free_port()
    config = write_config(
        f"""
[[tenants]]
id = "acme"
secrets = ["{ACME_SECRET}"]
allowed_origins = ["http://127.0.0.1:{port}"]
requests_per_second = 1000
"""
    )
    env = {
        "LAYERS_API_KEY": DEFAULT_KEY,
        "LAYERS_API_URL": sim_proc.url,
        "REDIS_URL": "memory://",
        "PROXY_AUTH": "tokens",
        "PROXY_CONFIG": str(config),
        "PROXY_PROJECT_POLL_S": "1",
        "PROXY_LOG_LEVEL": "warning",
    }
    try:
        proxy = start_proxy(env, port=port)
    except BaseException:
        sim_proc.stop()
        config.unlink(missing_ok=True)
        raise
    yield TokenProxy(Sim(sim_proc), proxy)
    proxy.stop()
    sim_proc.stop()
    config.unlink(missing_ok=True)


@dataclass
class TokenDesk:
    """The page's token endpoint (/test-token?projects=…), minted in Python."""

    issued: list[str] = field(default_factory=list)

    def handle(self, route: Route) -> None:
        projects = parse_qs(urlsplit(route.request.url).query)["projects"][0].split(",")
        token = mint_token(tenant="acme", secret=ACME_SECRET, projects=projects, ttl_s=TTL_S)
        self.issued.append(token)
        route.fulfill(status=200, content_type="text/plain", body=token)


def token_of(request: Request) -> str | None:
    """The token an API request carried: ?access_token= or Authorization: Bearer."""
    query = parse_qs(urlsplit(request.url).query)
    if query.get("access_token"):
        return query["access_token"][0]
    header = request.headers.get("authorization", "")
    return header[7:] if header.lower().startswith("bearer ") else None


@pytest.fixture
def token_page(browser: Browser, token_proxy: TokenProxy) -> Iterator[tuple[Page, TokenDesk]]:
    """A page whose /test-token endpoint mints acme project tokens."""
    context = browser.new_context(viewport={"width": 800, "height": 600})
    desk = TokenDesk()
    context.route(f"{token_proxy.url}/test-token*", desk.handle)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab, desk
    context.close()
    assert not errors, errors


@pytest.mark.browser
@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", ["auto", "poll"])
def test_token_mode_uses_a_project_token(
    token_proxy: TokenProxy, token_page: tuple[Page, TokenDesk], transport: str
) -> None:
    """With getToken() minting project tokens every request carries one (refreshed before
    each 4 s token runs out); the view follows the project's containers to their end."""
    page, desk = token_page
    project = new_project()
    stages: list[list[Any]] = [["generating_visuals", 5], ["finalizing", 5]]
    first = sim_container(token_proxy.sim.url, project, stages)
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))
    token_url = f"/test-token?projects={project}"
    open_view(page, token_proxy.url, project, transport=transport, **{"token-url": token_url})
    wait_rows(page, [first], timeout_ms=15_000)
    second = sim_container(token_proxy.sim.url, project, stages, ending="failed")
    wait_rows(page, [first, second], TERMINAL, timeout_ms=30_000)

    sim = sim_statuses(token_proxy.sim.url)
    assert {row[0]: row[1] for row in rows(page)} == {first: sim[first], second: sim[second]}
    api = api_requests(requests)
    assert api, "no API request at all"
    assert not [r.url for r in api if not token_of(r)]
    assert {token_of(r) for r in api} <= set(desk.issued)
    assert len(desk.issued) >= 2, len(desk.issued)  # a ~10 s run outlives a 4 s token
    streams = [r for r in api if "stream" in r.url]
    if transport == "poll":
        assert not streams, [r.url for r in streams]
    probe = mint_token(tenant="acme", secret=ACME_SECRET, projects=[project], ttl_s=TTL_S)
    if transport == "auto" and stream_available(token_proxy.url, project, probe):
        # Streamed throughout: reconnected with a fresh token before each one ran out.
        assert not [r.url for r in api if "stream" not in r.url]
        assert len(streams) >= 2, [r.url for r in streams]
        assert len({token_of(r) for r in streams}) >= 2


@pytest.mark.browser
@pytest.mark.timeout(30)
def test_token_mode_refuses_another_project(
    token_proxy: TokenProxy, token_page: tuple[Page, TokenDesk]
) -> None:
    """A token naming another project gets the missing-resource answer: the view ends in an
    error (Not found) and never goes anonymous."""
    page, _desk = token_page
    project, other = new_project(), new_project()
    sim_container(token_proxy.sim.url, project, STAGES)
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))
    token_url = f"/test-token?projects={other}"
    open_view(page, token_proxy.url, project, **{"token-url": token_url})
    view = page.locator("layers-project-progress")
    expect(view).to_have_attribute("data-state", "error", timeout=15_000)
    expect(view.locator(".summary")).to_have_text("Not found")
    expect(view.locator(".problem")).to_contain_text("NOT_FOUND")
    expect(view).to_have_attribute("data-count", "0")
    api = api_requests(requests)
    assert api and not [r.url for r in api if not token_of(r)]
