"""Canary secrets: a canary key, tenant secrets and tokens driven through every error path."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from proxy.tenancy.tokens import mint_token
from proxy.testing.processes import ManagedProcess, start_proxy, start_simulator, write_config
from tests.conftest import Sim
from tests.tenants.conftest import Reply, http

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

CANARY_KEY = "lp_live_CANARYKEYID00001_" + ("CanaryQ7x" * 5)[:43]
REJECTED_KEY = "lp_live_CANARYKEYID00002_" + ("RejectQ9w" * 5)[:43]
ACME_SECRET = "canary-acme-secret-" + "Zx81" * 10
GLOBEX_SECRET = "canary-globex-secret-" + "Wv52" * 10
ADMIN_TOKEN = "canary-admin-token-" + "Ty63" * 8
LONG_RUNNING = [["generating", 600]]

CONFIG = f"""
[[tenants]]
id = "acme"
secrets = ["{ACME_SECRET}"]
allowed_origins = ["https://app.acme.example"]

[[tenants]]
id = "globex"
secrets = [{{ kid = "g1", secret = "{GLOBEX_SECRET}" }}]
"""


@pytest.fixture
def canary_sim() -> Iterator[Sim]:
    """A simulator that accepts only the canary key and logs every request."""
    proc = start_simulator(args=["--key", CANARY_KEY, "--rate-per-min", "100000", "--log-requests"])
    yield Sim(proc)
    proc.stop()


def test_canaries_never_leave(canary_sim: Sim, redis_url: str, redis_proc: ManagedProcess) -> None:
    """No secret shows up in any process output or any response, whatever went wrong."""
    sim = canary_sim
    config = write_config(CONFIG)
    env = {
        "LAYERS_API_KEY": CANARY_KEY,
        "LAYERS_API_URL": sim.url,
        "REDIS_URL": redis_url,
        "PROXY_CONFIG": str(config),
        "PROXY_LOG_LEVEL": "debug",
        "PROXY_ACCESS_LOG": "all",
        "PROXY_ADMIN_TOKEN": ADMIN_TOKEN,
        "PROXY_UPSTREAM_TIMEOUT_S": "1",
        "PROXY_COLD_WAIT_S": "3",
    }
    procs = [start_proxy(env, name="one"), start_proxy(env, name="two")]
    one, two = procs
    # A replica whose key the upstream rejects (its own Redis database: it marks the key bad).
    rejected_env = {**env, "LAYERS_API_KEY": REJECTED_KEY, "REDIS_URL": redis_url[:-1] + "1"}
    procs.append(start_proxy(rejected_env, name="rejected"))
    replies: list[Reply] = []

    def get(url: str, **kw: Any) -> Reply:
        reply = http(url, **kw)
        replies.append(reply)
        return reply

    cids = [sim.container(stages=LONG_RUNNING)[0] for _ in range(8)]
    ok, *broken = cids
    token = mint_token(tenant="acme", secret=ACME_SECRET, containers=cids)
    globex = mint_token(tenant="globex", secret=GLOBEX_SECRET, kid="g1", containers=cids)
    forged = mint_token(tenant="acme", secret=GLOBEX_SECRET, containers=cids)
    tokens = [token, globex, forged]
    try:
        progress = "/v1/content/{}/progress"
        for proxy in (one, two):
            assert get(proxy.url + progress.format(ok), token=token).status == 200
            assert get(proxy.url + progress.format(ok), token=globex).status == 200
            assert get(proxy.url + progress.format(ok), token=forged).status == 401
            assert get(f"{proxy.url}{progress.format(ok)}?access_token={forged}").status == 401
            stream = f"{proxy.url}{progress.format(ok)}/stream?access_token={forged}"
            assert get(stream).status == 401
            assert get(proxy.url + progress.format(ok), token=token + "x").status == 401
        # Upstream failures on cold containers: 5xx, garbage, cut bodies, resets, a timeout.
        faults = [
            {"kind": "status", "status": 500},
            {"kind": "status", "status": 503},
            {"kind": "garbage"},
            {"kind": "truncated"},
            {"kind": "reset"},
            {"kind": "hang"},
            {"kind": "status", "status": 401},  # last: the proxy then marks the key rejected
        ]
        for cid, fault in zip(broken, faults, strict=True):
            sim.fault(**fault, path_contains=cid)
            reply = get(one.url + progress.format(cid), token=token)
            assert 500 <= reply.status < 600, (fault, reply)
        sim.clear_faults()
        # Oversized requests carrying the token: headers, then a URL.
        big = {"X-Padding": token * 80}
        assert get(one.url + progress.format(ok), token=token, headers=big).status == 431
        long_url = f"{one.url}{progress.format(ok)}?access_token={token}&pad={'x' * 20000}"
        assert get(long_url).status == 414
        # The rejected key, readiness and the admin endpoint.
        rejected = get(procs[2].url + progress.format(ok), token=token)
        assert rejected.status == 502 and rejected.json()["error"]["code"] == "UPSTREAM_AUTH"
        assert get(procs[2].url + "/readyz").status == 503
        assert get(one.url + "/admin/stats", token=ADMIN_TOKEN + "x").status == 401
        assert get(one.url + "/admin/stats", token=ADMIN_TOKEN).status == 200
    finally:
        for proc in procs:
            proc.stop()
        config.unlink()
        sim.proc.stop()

    secrets = {
        "canary key": CANARY_KEY,
        "canary key secret part": CANARY_KEY.rsplit("_", 1)[1],
        "rejected key": REJECTED_KEY,
        "rejected key secret part": REJECTED_KEY.rsplit("_", 1)[1],
        "acme secret": ACME_SECRET,
        "globex secret": GLOBEX_SECRET,
        "admin token": ADMIN_TOKEN,
    }
    for n, tok in enumerate(tokens):
        secrets[f"token {n}"] = tok
        secrets[f"token {n} signature"] = tok.rsplit(".", 1)[1]
    outputs = {proc.name: proc.all_output() for proc in [*procs, sim.proc, redis_proc]}
    assert all(outputs[p.name] for p in procs)  # debug logs and the access log did print
    assert "CANARYKEYID00001" in outputs["one"] + outputs["simulator"]  # key ids may show
    for what, secret in secrets.items():
        for name, text in outputs.items():
            assert secret not in text, f"{what} leaked into the output of {name}"
        for reply in replies:
            assert secret.encode() not in reply.body, f"{what} leaked into a response body"
            assert secret not in str(reply.headers), f"{what} leaked into response headers"
