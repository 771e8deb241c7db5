"""Tokens that expire: the browser client refreshes them through getToken() and never goes
anonymous, against a real proxy in token mode (PROXY_AUTH=tokens) and a real simulator.

The page's token endpoint is a route of the browser context: Python mints each token
(``mint_token``) with a lifetime of a few seconds, so one run spans several of them.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.client import HTTPConnection
from itertools import pairwise
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import jwt
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, Response, Route

from proxy.simulator.state import DEFAULT_KEY
from proxy.tenancy.tokens import mint_token
from proxy.testing.processes import (
    ManagedProcess,
    free_port,
    start_proxy,
    start_simulator,
    write_config,
)
from tests.conftest import Sim

ACME_SECRET = "acme-browser-secret-" + secrets.token_hex(24)
GLOBEX_SECRET = "globex-browser-secret-" + secrets.token_hex(24)
TTL_S = 4
TERMINAL = ["canceled", "completed", "failed"]
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
ALL_IN = """([states, n]) => { const all = [...document.querySelectorAll("layers-progress")];
  return all.length === n && all.every((el) => states.includes(el.dataset.state)); }"""


@dataclass
class TokenProxy:
    """A simulator and a token-mode proxy (with an admin token for its counters)."""

    sim: Sim
    proxy: ManagedProcess
    admin: str

    @property
    def url(self) -> str:
        return self.proxy.url

    def stats(self) -> dict[str, Any]:
        request = urllib.request.Request(
            self.url + "/admin/stats", headers={"Authorization": f"Bearer {self.admin}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data


@pytest.fixture(scope="module")
def token_proxy() -> Iterator[TokenProxy]:
    """Simulator + proxy in token mode with two tenants, acme and globex."""
    sim_proc = start_simulator(args=["--rate-per-min", "100000"])
    port = free_port()
    config = write_config(
        f"""
[[tenants]]
id = "acme"
secrets = ["{ACME_SECRET}"]
allowed_origins = ["http://127.0.0.1:{port}"]
requests_per_second = 1000

[[tenants]]
id = "globex"
secrets = [{{ kid = "g1", secret = "{GLOBEX_SECRET}" }}]
allowed_origins = ["http://127.0.0.1:{port}"]
requests_per_second = 1000
"""
    )
    admin = secrets.token_urlsafe(32)
    env = {
        "LAYERS_API_KEY": DEFAULT_KEY,
        "LAYERS_API_URL": sim_proc.url,
        "REDIS_URL": "memory://",
        "PROXY_AUTH": "tokens",
        "PROXY_CONFIG": str(config),
        "PROXY_ADMIN_TOKEN": admin,
        "PROXY_LOG_LEVEL": "warning",
    }
    try:
        proxy = start_proxy(env, port=port)
    except BaseException:
        sim_proc.stop()
        config.unlink(missing_ok=True)
        raise
    yield TokenProxy(Sim(sim_proc), proxy, admin)
    proxy.stop()
    sim_proc.stop()
    config.unlink(missing_ok=True)


def mint(tenant: str, containers: list[str], ttl_s: int, age_s: float = 0) -> str:
    """A token of ``tenant`` (acme or globex) naming ``containers``, issued ``age_s`` ago."""
    now = time.time() - age_s
    if tenant == "globex":
        return mint_token(
            tenant="globex",
            secret=GLOBEX_SECRET,
            kid="g1",
            containers=containers,
            ttl_s=ttl_s,
            now=now,
        )
    return mint_token(
        tenant="acme", secret=ACME_SECRET, containers=containers, ttl_s=ttl_s, now=now
    )


@dataclass
class Issued:
    """One answer of the token endpoint."""

    at: float
    page: Page
    token: str | None


@dataclass
class TokenDesk:
    """The page's token endpoint (/test-token?tenant=…&containers=…), answered in Python."""

    ttl_s: int = TTL_S
    failing: bool = False
    refused_next: int = 0  # this many next answers look fine but are signed with a wrong secret
    age_s: float = 0  # tokens handed out were issued this long ago (a token cache)
    issued: list[Issued] = field(default_factory=list)

    def handle(self, route: Route) -> None:
        query = parse_qs(urlsplit(route.request.url).query)
        page = route.request.frame.page
        if self.failing:
            self.issued.append(Issued(time.time(), page, None))
            route.fulfill(status=503, content_type="text/plain", body="token service down")
            return
        tenant, containers = query["tenant"][0], query["containers"][0].split(",")
        if self.refused_next > 0:
            self.refused_next -= 1
            token = mint_token(tenant=tenant, secret="w" * 48, containers=containers, ttl_s=60)
        else:
            token = mint(tenant, containers, self.ttl_s, self.age_s)
        self.issued.append(Issued(time.time(), page, token))
        route.fulfill(status=200, content_type="text/plain", body=token)

    def calls(self, page: Page) -> int:
        return sum(1 for item in self.issued if item.page is page)


@dataclass
class Traffic:
    """Every request the browser context made to the proxy's API, and the answers."""

    requests: list[tuple[float, Request]] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)

    def api(self) -> list[Request]:
        return [r for _, r in self.requests if urlsplit(r.url).path.startswith("/v1/")]

    def streams(self) -> list[Request]:
        return [r for r in self.api() if "stream" in urlsplit(r.url).path]

    def polls(self) -> list[Request]:
        return [r for r in self.api() if "stream" not in urlsplit(r.url).path]

    def statuses(self, kind: Callable[[Request], bool]) -> list[tuple[str | None, int]]:
        """(token, status) of each answered API request that ``kind`` selects."""
        return [
            (token_of(r.request), r.status)
            for r in self.responses
            if urlsplit(r.url).path.startswith("/v1/") and kind(r.request)
        ]


def token_of(request: Request) -> str | None:
    """The token an API request carried: ?access_token= or Authorization: Bearer."""
    query = parse_qs(urlsplit(request.url).query)
    if query.get("access_token"):
        return query["access_token"][0]
    header = request.headers.get("authorization", "")
    return header[7:] if header.lower().startswith("bearer ") else None


@dataclass
class Browsing:
    """A browser context with the token endpoint routed and the API traffic recorded."""

    context: BrowserContext
    desk: TokenDesk
    traffic: Traffic
    proxy: TokenProxy
    errors: list[str]

    def open(self, containers: list[str], tenant: str = "acme", query: str = "") -> Page:
        """A tab of the shared example whose elements get tokens from the desk."""
        token_url = f"/test-token?tenant={tenant}&containers={','.join(containers)}"
        page = self.context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.goto(
            f"{self.proxy.url}/static/shared-example.html?containers={','.join(containers)}"
            f"&token-url={quote(token_url, safe='')}{query}"
        )
        return page


@pytest.fixture
def browsing(browser: Browser, token_proxy: TokenProxy) -> Iterator[Browsing]:
    """One browser context for the test (its tabs may share a stream)."""
    context = browser.new_context(viewport={"width": 800, "height": 600})
    context.add_init_script(RECORD)
    desk, traffic = TokenDesk(), Traffic()
    context.route(f"{token_proxy.url}/test-token*", desk.handle)
    context.on("request", lambda r: traffic.requests.append((time.time(), r)))
    context.on("response", lambda r: traffic.responses.append(r))
    errors: list[str] = []
    yield Browsing(context, desk, traffic, token_proxy, errors)
    context.close()
    assert not errors, errors


def assert_never_anonymous(traffic: Traffic) -> None:
    """Every API request carried a token."""
    api = traffic.api()
    assert api, "no API request at all"
    bare = [r.url for r in api if not token_of(r)]
    assert not bare, bare


def seen(page: Page, cid: str) -> list[str]:
    """The (state:stage) changes the page's element for ``cid`` went through."""
    history: dict[str, list[str]] = page.evaluate("window.__seen")
    return history.get(cid, [])


def stages_of(history: list[str]) -> list[str]:
    """The distinct stages of a history, in order."""
    stages = [entry.split(":", 1)[1] for entry in history]
    return [s for n, s in enumerate(stages) if n == 0 or stages[n - 1] != s]


def wait_until(check: Callable[[], bool], timeout_s: float, pump: Page, what: str) -> float:
    """Re-check ``check`` until it holds (``pump`` keeps playwright's events flowing)."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        pump.wait_for_timeout(100)  # the poll interval of this loop, not a synchronisation
    return time.monotonic() - start


STAGES: list[list[Any]] = [
    ["generating_visuals", 5],
    ["generating_sdk_patch", 5],
    ["opening_pr", 5],
    ["finalizing", 5],
]


@pytest.mark.browser
@pytest.mark.timeout(90)
def test_stream_keeps_going_across_token_lifetimes(browsing: Browsing) -> None:
    """A 20 s run on 4 s tokens: refreshed before each expiry, resumed by event id, no gap."""
    cids = [browsing.proxy.sim.container(STAGES)[0] for _ in range(2)]
    page = browsing.open(cids)
    started = time.monotonic()
    page.wait_for_function(ALL_IN, arg=[["completed"], 2], timeout=45_000)
    took_s = time.monotonic() - started

    assert_never_anonymous(browsing.traffic)
    streams = browsing.traffic.streams()
    tokens = [token_of(r) for r in streams]
    issued = [item.token for item in browsing.desk.issued]
    # One token per lifetime (minus the lead), each used by one reconnect of the one stream.
    assert took_s >= 4 * TTL_S
    assert len(issued) >= took_s // TTL_S, (len(issued), took_s)
    assert len(set(tokens)) >= 4, len(set(tokens))
    assert set(tokens) <= set(issued)
    assert not browsing.traffic.polls(), [r.url for r in browsing.traffic.polls()]
    # Every reconnect resumes: it names the last event id it had.
    resumed = [r for r in streams[1:] if "lastEventId=" in r.url]
    assert len(resumed) == len(streams) - 1, [r.url for r in streams]
    # Each token went out while it was still valid (exp is whole seconds).
    for sent_at, request in browsing.traffic.requests:
        token = token_of(request)
        if token and "stream" in request.url:
            assert jwt.decode(token, options={"verify_signature": False})["exp"] > sent_at
    for cid in cids:
        history = seen(page, cid)
        assert stages_of(history) == [name for name, _ in STAGES], history
        assert not [h for h in history if h.startswith("error")], history
    print(f"{took_s:.1f} s, {len(issued)} tokens, {len(streams)} stream connects")


@pytest.mark.browser
@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", ["stream", "poll"])
def test_a_refused_token_is_replaced_once(browsing: Browsing, transport: str) -> None:
    """The proxy refuses the first token (401): the client gets a fresh one and carries on
    (a poll retries at once; a refused stream reconnects)."""
    browsing.desk.refused_next = 1
    cid = browsing.proxy.sim.container([["generating_visuals", 4], ["finalizing", 4]])[0]
    query = "&transport=poll" if transport == "poll" else ""
    page = browsing.open([cid], query=query)
    page.wait_for_function(ALL_IN, arg=[["completed"], 1], timeout=30_000)

    assert_never_anonymous(browsing.traffic)
    is_stream = transport == "stream"
    answered = browsing.traffic.statuses(lambda r: ("stream" in r.url) == is_stream)
    first_token = browsing.desk.issued[0].token
    assert answered[0] == (first_token, 401), answered
    assert [status for _, status in answered].count(401) == 1, answered
    assert answered[1][0] != first_token and answered[1][1] in (200, 304), answered
    other = browsing.traffic.polls() if is_stream else browsing.traffic.streams()
    assert not other, [r.url for r in other]
    assert not [h for h in seen(page, cid) if h.startswith("error")], seen(page, cid)


@pytest.mark.browser
@pytest.mark.timeout(60)
def test_token_expired_event_reconnects_with_a_fresh_token(browsing: Browsing) -> None:
    """The contract of the proxy's close at exp: a final `event: error` TOKEN_EXPIRED. The
    client takes a fresh token and reconnects with ?lastEventId=, showing no error."""
    cid = browsing.proxy.sim.container([["generating_visuals", 4], ["finalizing", 4]])[0]
    faked: list[str] = []
    faked_at: list[float] = []

    def expire_first(route: Route) -> None:
        if faked:
            route.fallback()
            return
        faked.append(route.request.url)
        faked_at.append(time.time())
        progress = {
            "containerId": cid,
            "status": "processing",
            "stage": "generating_visuals",
            "stageProgress": 0.01,
        }
        error = {
            "containerId": cid,
            "error": {
                "code": "TOKEN_EXPIRED",
                "message": "The capability token expired.",
                "requestId": "req_test",
            },
        }
        body = (
            "retry: 100\n\n"
            f"event: progress\nid: 7\ndata: {json.dumps(progress)}\n\n"
            f"event: error\ndata: {json.dumps(error)}\n\n"
        )
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)

    browsing.context.route(f"{browsing.proxy.url}/v1/stream*", expire_first)
    page = browsing.open([cid])
    page.wait_for_function(ALL_IN, arg=[["completed"], 1], timeout=30_000)

    assert_never_anonymous(browsing.traffic)
    streams = browsing.traffic.streams()
    assert len(faked) == 1 and streams[0].url == faked[0]
    # getToken() was asked again after the TOKEN_EXPIRED, and the reconnect carried its answer
    # (minted in the same second with the same claims, it may equal the first byte for byte).
    expired_at = faked_at[0]
    fresh = [item.token for item in browsing.desk.issued if item.at >= expired_at]
    assert fresh, "no getToken() call after TOKEN_EXPIRED"
    assert token_of(streams[1]) == fresh[0]
    assert "lastEventId=7" in streams[1].url, streams[1].url
    history = seen(page, cid)
    assert not [h for h in history if h.startswith("error")], history
    assert history[0] == "running:generating_visuals", history


@pytest.mark.browser
@pytest.mark.timeout(60)
def test_the_proxys_close_at_exp_is_bridged_with_a_fresh_token(browsing: Browsing) -> None:
    """The real TOKEN_EXPIRED: tokens come from a cache (issued 2 s ago, 2 s left) and the
    browser's clock is 3 s behind, so the client thinks each token has 4 s and the proxy ends
    every stream at exp first. Each time the client gets a token and resumes at once."""
    browsing.desk.age_s = 2
    browsing.context.add_init_script("{ const now = Date.now; Date.now = () => now() - 3000; }")
    stages = [["generating_visuals", 5], ["finalizing", 5]]
    cid = browsing.proxy.sim.container(stages)[0]
    page = browsing.open([cid])
    page.wait_for_function(ALL_IN, arg=[["completed"], 1], timeout=30_000)

    assert_never_anonymous(browsing.traffic)
    assert not browsing.traffic.polls(), [r.url for r in browsing.traffic.polls()]
    sent = [(at, r) for at, r in browsing.traffic.requests if "/v1/stream" in r.url]
    assert len(sent) >= 4, len(sent)
    for (at, request), (next_at, next_request) in pairwise(sent):
        exp = jwt.decode(token_of(request) or "", options={"verify_signature": False})["exp"]
        # Reconnected when the proxy closed the stream at exp; the client's own refresh would
        # have come about 3 s after the token arrived, later than that.
        assert exp - 0.5 <= next_at <= exp + 1.0, (next_at - exp, next_at - at)
        assert "lastEventId=" in next_request.url, next_request.url
        assert token_of(next_request) != token_of(request)
    history = seen(page, cid)
    assert stages_of(history) == [name for name, _ in stages], history
    assert not [h for h in history if h.startswith("error")], history
    gaps = [round(b - a, 2) for (a, _), (b, _) in pairwise(sent)]
    print(f"{len(sent)} stream connects, {gaps} s apart")


@pytest.mark.browser
@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", ["stream", "poll"])
def test_failing_get_token_ends_in_an_error_not_anonymous(
    browsing: Browsing, transport: str
) -> None:
    """Once getToken() fails and the token runs out, the element shows an error; no request
    ever goes out without a token."""
    cid = browsing.proxy.sim.container([["generating_visuals", 120]])[0]
    query = "&transport=poll" if transport == "poll" else ""
    page = browsing.open([cid], query=query)
    page.wait_for_function(ALL_IN, arg=[["running"], 1], timeout=15_000)
    wait_until(lambda: len(browsing.desk.issued) >= 2, 2 * TTL_S, page, "a first refresh")

    browsing.desk.failing = True
    failed_at = time.monotonic()
    last_good = max(i.at for i in browsing.desk.issued if i.token)
    page.wait_for_function(ALL_IN, arg=[["error"], 1], timeout=(TTL_S + 10) * 1000)
    error_s = time.monotonic() - failed_at

    element = page.locator("layers-progress")
    assert "TOKEN_REFRESH_FAILED" in element.locator(".problem").inner_text()
    assert element.locator(".title").inner_text() == "Access expired"
    assert_never_anonymous(browsing.traffic)
    failures = [i for i in browsing.desk.issued if i.token is None]
    assert len(failures) >= 3, len(failures)  # retried before giving up
    # The error comes soon after the last good token's lifetime (plus the retries).
    assert error_s <= TTL_S + 8, error_s
    # Nothing went to the proxy after the last good token expired, and no stream is left open.
    too_late = [
        r.url
        for at, r in browsing.traffic.requests
        if at > last_good + TTL_S + 1 and urlsplit(r.url).path.startswith("/v1/")
    ]
    assert not too_late, too_late
    wait_until(lambda: browsing.proxy.stats()["streams_open"] == 0, 5, page, "stream closed")


@pytest.mark.browser
@pytest.mark.timeout(90)
def test_tabs_share_a_stream_per_tenant_and_only_the_leader_refreshes(
    browsing: Browsing,
) -> None:
    """Three acme tabs share one stream; a globex tab on the same container gets its own. Only
    leaders call getToken() after joining; every tab still follows the run to the end."""
    stages = [["generating_visuals", 5], ["opening_pr", 5], ["finalizing", 5]]
    cid = browsing.proxy.sim.container(stages)[0]
    acme = [browsing.open([cid]) for _ in range(3)]
    globex = browsing.open([cid], tenant="globex")
    tabs = [*acme, globex]
    for tab in tabs:
        tab.wait_for_function(ALL_IN, arg=[["running"], 1], timeout=15_000)
    wait_until(lambda: browsing.proxy.stats()["streams_open"] == 2, 10, acme[0], "two streams")
    for tab in tabs:
        tab.wait_for_function(ALL_IN, arg=[["completed"], 1], timeout=30_000)

    assert_never_anonymous(browsing.traffic)
    streamers = {r.frame.page for r in browsing.traffic.streams()}
    assert len(streamers) == 2 and globex in streamers, len(streamers)
    (leader,) = streamers - {globex}
    followers = [tab for tab in acme if tab is not leader]
    assert [browsing.desk.calls(tab) for tab in followers] == [1, 1]  # the join only
    assert browsing.desk.calls(leader) >= 3, browsing.desk.calls(leader)
    assert browsing.desk.calls(globex) >= 3, browsing.desk.calls(globex)
    for tab in tabs:
        assert stages_of(seen(tab, cid)) == [name for name, _ in stages], seen(tab, cid)
    # Lock and channel names are hashes: no token, no tenant in them.
    names = acme[0].evaluate(
        "navigator.locks.query().then((q) => [...q.held, ...q.pending].map((l) => l.name))"
    )
    assert all(re.fullmatch(r"layers-progress:[0-9a-f]{64}", n) for n in names), names


def _probe_close_at_exp(proxy: TokenProxy, cid: str) -> bool:
    """Does the proxy end a stream with TOKEN_EXPIRED when its token runs out?"""
    # Issued 3 s ago for 4 s: one second left (the proxy allows 5 s of leeway after that).
    now = time.time() - 3
    token = mint_token(tenant="acme", secret=ACME_SECRET, containers=[cid], ttl_s=4, now=now)
    conn = HTTPConnection("127.0.0.1", proxy.proxy.port, timeout=10)
    try:
        conn.request("GET", f"/v1/content/{cid}/progress/stream?access_token={token}")
        response = conn.getresponse()
        if response.status != 200:
            return False
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            line = response.readline()
            if not line:
                return False  # closed without saying why
            if b"TOKEN_EXPIRED" in line:
                return True
        return False
    except TimeoutError:
        return False
    finally:
        conn.close()


@pytest.mark.browser
@pytest.mark.timeout(60)
def test_proxy_close_at_exp_with_a_fixed_token_is_an_error(browsing: Browsing) -> None:
    """With a fixed token (no getToken) the proxy's TOKEN_EXPIRED ends the watch with that
    error: the client neither reconnects anonymously nor falls back to polling."""
    cid = browsing.proxy.sim.container([["generating_visuals", 120]])[0]
    if not _probe_close_at_exp(browsing.proxy, cid):
        pytest.skip("this proxy does not end streams with TOKEN_EXPIRED at exp yet")
    token = mint("acme", [cid], 3)
    page = browsing.context.new_page()
    page.goto(f"{browsing.proxy.url}/static/shared-example.html?containers={cid}&token={token}")
    page.wait_for_function(ALL_IN, arg=[["error"], 1], timeout=20_000)
    element = page.locator("layers-progress")
    assert "TOKEN_EXPIRED" in element.locator(".problem").inner_text()
    assert_never_anonymous(browsing.traffic)
    assert not browsing.traffic.polls()
