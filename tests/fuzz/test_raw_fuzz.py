"""20,000 hostile requests over raw sockets against a real proxy, in open and in token mode.

What must hold whatever arrives: no response with a 5xx status (a closed connection is fine), no
upstream request for an id that is invalid or not the caller's, a healthy process afterwards, and
logs that stay small, traceback-free and free of every token, key and raw header value.

Not fuzzed here: POSTs to ``/v1/webhooks/layers``, which answers 503 while webhooks are not
configured and logs one ``webhook_rejected`` line per bad signature when they are.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import uvloop

from proxy.simulator.state import DEFAULT_KEY
from proxy.tenancy.tokens import mint_token
from proxy.testing.processes import ManagedProcess, write_config
from tests.conftest import ProxyFactory, Sim
from tests.fuzz.client import Outcome, run_all
from tests.fuzz.generator import CANARY, Fuzzer, Ids

pytestmark = [pytest.mark.integration]

CASES = 20_000
CONCURRENCY = 96
SEED = 20_260_801
ADMIN_TOKEN = "admin-token-" + "Z" * 30
ACME_SECRET = "fuzz-acme-secret-" + "Q" * 40
GLOBEX_SECRET = "fuzz-globex-secret-" + "W" * 40
MAX_LOG_LINES = 200
MAX_RSS_GROWTH_MB = 150

TENANTS = f"""
[[tenants]]
id = "acme"
secrets = ["{ACME_SECRET}"]
allowed_origins = ["https://app.acme.example"]
requests_per_second = 100000
max_streams = 10000
max_watched = 10000

[[tenants]]
id = "globex"
secrets = [{{ kid = "g1", secret = "{GLOBEX_SECRET}" }}]
allowed_origins = ["https://globex.example"]
"""


def _get(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as err:
        with err:
            return int(err.code)


def _rss_mb(proc: ManagedProcess) -> float:
    assert proc.proc is not None
    for line in Path(f"/proc/{proc.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _fuzz(proxy: ManagedProcess, fuzzer: Fuzzer) -> tuple[list[Outcome], float]:
    cases = fuzzer.cases(CASES)
    started = time.monotonic()
    # uvloop: the client shares two cores with the proxy, so it should cost as little as it can.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        outcomes = runner.run(run_all("127.0.0.1", proxy.port, cases, CONCURRENCY))
    return outcomes, time.monotonic() - started


def _check(
    proxy: ManagedProcess,
    sim: Sim,
    outcomes: list[Outcome],
    ids: Ids,
    secrets: list[str],
    rss_before: float,
    poll: tuple[str, str | None],
) -> None:
    assert len(outcomes) == CASES
    server_errors = [o for o in outcomes if any(s >= 500 for s in o.statuses)]
    malformed = [o for o in outcomes if o.malformed is not None]
    refused = [o for o in outcomes if o.connect_failed]
    detail = "\n".join(
        f"{o.statuses or o.malformed}: {o.case.describe(secrets)}"
        for o in (server_errors + malformed)[:8]
    )
    assert not server_errors, f"{len(server_errors)} cases got a 5xx:\n{detail}"
    assert not malformed, f"{len(malformed)} answers were not HTTP:\n{detail}"
    assert not refused, f"{len(refused)} connections were refused"
    answered = sum(len(o.statuses) for o in outcomes)
    assert answered > CASES * 0.8, Counter(o.case.label for o in outcomes if not o.statuses)

    # Bad input cost nothing upstream: only the ids the test uses on purpose were fetched.
    fetched = {r["resource_id"] for r in sim.requests()}
    assert fetched <= ids.allowed_upstream, fetched - ids.allowed_upstream

    # Still healthy: alive, answering, memory in bounds.
    assert proxy.proc is not None and proxy.proc.poll() is None
    assert _get(proxy.url + "/healthz") == 200
    assert _get(proxy.url + poll[0], poll[1]) == 200
    assert _rss_mb(proxy) - rss_before < MAX_RSS_GROWTH_MB

    # Logs: small, one JSON object per line, no traceback, no secret, no raw header value.
    out = proxy.all_output()
    lines = out.splitlines()
    assert len(lines) < MAX_LOG_LINES, "\n".join(lines[:60])
    assert "Traceback" not in out
    assert CANARY not in out
    for secret in secrets:
        assert secret not in out
    for line in lines:
        if not line.startswith("proxy listening on"):
            json.loads(line)


def test_fuzz_open_mode(sim: Sim, proxies: ProxyFactory) -> None:
    """Open mode: every well-formed id would be fetched, so the generator sticks to two."""
    cid, jid = sim.container([["generating_visuals", 1.0]])
    proxy = proxies(PROXY_ADMIN_TOKEN=ADMIN_TOKEN)
    ids = Ids(containers=[cid], jobs=[jid])
    assert _get(f"{proxy.url}/v1/content/{cid}/progress") == 200
    rss_before = _rss_mb(proxy)
    outcomes, took = _fuzz(proxy, Fuzzer(SEED, ids))
    print(f"open mode: {CASES} cases in {took:.1f}s, {len(proxy.lines)} log lines")
    _check(
        proxy,
        sim,
        outcomes,
        ids,
        [ADMIN_TOKEN, DEFAULT_KEY],
        rss_before,
        (f"/v1/content/{cid}/progress", None),
    )


def test_fuzz_token_mode(sim: Sim, proxies: ProxyFactory) -> None:
    """Token mode: valid tokens for other resources, forged, expired and garbage tokens."""
    cid, jid = sim.container([["generating_visuals", 1.0]])
    hidden_cid, hidden_jid = sim.container([["generating_visuals", 30.0]])  # nobody may see it
    config = write_config(TENANTS)
    try:
        proxy = proxies(
            PROXY_AUTH="tokens", PROXY_CONFIG=str(config), PROXY_ADMIN_TOKEN=ADMIN_TOKEN
        )
        acme = mint_token(tenant="acme", secret=ACME_SECRET, containers=[cid], jobs=[jid])
        globex = mint_token(tenant="globex", secret=GLOBEX_SECRET, kid="g1", containers=[cid])
        expired = mint_token(
            tenant="acme", secret=ACME_SECRET, containers=[cid], now=time.time() - 7200
        )
        other = "3f2b8c1e-9a4d-4e7b-8c21-0a1b2c3d4e5f"  # valid, unknown, not granted
        ids = Ids(
            containers=[cid],
            jobs=[jid],
            forbidden_containers=[hidden_cid, other],
            forbidden_jobs=[hidden_jid],
        )
        assert _get(f"{proxy.url}/v1/content/{cid}/progress", acme) == 200
        rss_before = _rss_mb(proxy)
        fuzzer = Fuzzer(SEED + 1, ids, tokens=[acme, globex, expired])
        outcomes, took = _fuzz(proxy, fuzzer)
        print(f"token mode: {CASES} cases in {took:.1f}s, {len(proxy.lines)} log lines")
        secrets = [ADMIN_TOKEN, ACME_SECRET, GLOBEX_SECRET, acme, globex, expired, DEFAULT_KEY]
        # A token's signature alone must not show up either.
        secrets += [t.rsplit(".", 1)[1] for t in (acme, globex, expired)]
        _check(
            proxy,
            sim,
            outcomes,
            ids,
            secrets,
            rss_before,
            (f"/v1/content/{cid}/progress", acme),
        )
    finally:
        os.unlink(config)
