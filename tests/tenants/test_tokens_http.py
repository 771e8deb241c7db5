"""Capability tokens through real processes: hostile tokens, isolation, query tokens, the CLI."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from http.client import HTTPConnection
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest

from proxy.simulator.state import DEFAULT_KEY
from proxy.testing.processes import write_config
from tests.tenants.conftest import (
    ACME_SECRET,
    GLOBEX_SECRET,
    Reply,
    acme_token,
    http,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

AUD = "layers-progress-proxy"
LONG_RUNNING = [["generating", 600]]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _forge(
    header: dict[str, Any], claims: dict[str, Any], secret: bytes | None, digest: str = "sha256"
) -> str:
    """A JWT with any header, signed with HMAC over ``secret`` (or unsigned)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if secret is None:
        return signing_input + "."
    sig = hmac.new(secret, signing_input.encode(), getattr(hashlib, digest)).digest()
    return f"{signing_input}.{_b64(sig)}"


def hostile_tokens(cid: str) -> dict[str, str]:
    """Every kind of bad token, each naming ``cid`` so only the token is wrong."""
    now = int(time.time())
    good = {"tenant": "acme", "aud": AUD, "iat": now, "exp": now + 600, "containers": [cid]}
    secret = ACME_SECRET.encode()
    valid = acme_token(cid)
    head, body, sig = valid.split(".")
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]

    def hs256(claims: dict[str, Any], key: bytes = secret, kid: str = "0") -> str:
        return jwt.encode(claims, key, algorithm="HS256", headers={"kid": kid})

    def without(name: str) -> dict[str, Any]:
        return {k: v for k, v in good.items() if k != name}

    return {
        "bad signature": f"{head}.{body}.{flipped}",
        "expired": hs256({**good, "iat": now - 4000, "exp": now - 3400}),
        "wrong aud": hs256({**good, "aud": "someone-else"}),
        "alg none": _forge({"alg": "none", "typ": "JWT", "kid": "0"}, good, None),
        "alg HS512": _forge({"alg": "HS512", "typ": "JWT", "kid": "0"}, good, secret, "sha512"),
        "alg RS256 with an HMAC": _forge({"alg": "RS256", "typ": "JWT", "kid": "0"}, good, secret),
        "unknown kid": hs256(good, kid="7"),
        "unknown tenant": hs256({**good, "tenant": "initech"}),
        "missing exp": hs256(without("exp")),
        "missing aud": hs256(without("aud")),
        "missing tenant": hs256(without("tenant")),
        "lifetime over 1 h": hs256({**good, "exp": now + 7200}),
        "oversized": hs256({**good, "pad": "x" * 9000}),
        "garbage": "not-a-token",
        "three garbage parts": "a.b.c",
        "acme claims, globex secret": hs256(good, key=GLOBEX_SECRET.encode()),
    }


def read_event(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """Open a stream and read up to its first event (or the whole error body)."""
    parts = urlsplit(url)
    conn = HTTPConnection(parts.hostname, parts.port, timeout=15)
    try:
        conn.request(
            "GET", parts.path + ("?" + parts.query if parts.query else ""), headers=headers or {}
        )
        resp = conn.getresponse()
        if resp.status != 200:
            return resp.status, dict(resp.getheaders()), resp.read().decode()
        lines = []
        while True:
            line = resp.readline().decode()
            lines.append(line)
            if line.startswith("data:"):
                return resp.status, dict(resp.getheaders()), "".join(lines)
    finally:
        conn.close()


def test_hostile_tokens_all_get_one_401_and_cost_nothing(cluster_factory: Any) -> None:
    """Every malformed, forged or out-of-policy token is 401 with one message; no upstream call."""
    cluster = cluster_factory()
    proxy = cluster.start()
    cid, _ = cluster.sim.container(stages=LONG_RUNNING)
    poll = f"{proxy.url}/v1/content/{cid}/progress"
    stream = f"{proxy.url}/v1/content/{cid}/progress/stream"
    messages = set()
    for why, token in hostile_tokens(cid).items():
        replies = [http(poll, token=token)]
        query = http(f"{stream}?access_token={token}")
        if why == "oversized":
            # In a URL the edge's URL length limit answers first.
            assert query.status == 414
        else:
            replies.append(query)
        for reply in replies:
            assert reply.status == 401, why
            error = reply.json()["error"]
            assert error["code"] == "UNAUTHENTICATED", why
            messages.add(error["message"])
    assert messages == {"The capability token is invalid or expired."}
    assert cluster.sim.requests() == []


def test_other_tenants_container_looks_missing(cluster_factory: Any) -> None:
    """A valid token for another container gets the same 404 as an unknown one, and no call."""
    cluster = cluster_factory()
    proxy = cluster.start()
    mine, _ = cluster.sim.container(stages=LONG_RUNNING)
    theirs, _ = cluster.sim.container(stages=LONG_RUNNING)
    unknown = "cnt_00000000-0000-4000-8000-000000000000"
    token = acme_token(mine, unknown)

    not_mine = http(f"{proxy.url}/v1/content/{theirs}/progress", token=token)
    not_there = http(f"{proxy.url}/v1/content/{unknown}/progress", token=token)

    def shape(reply: Reply, rid: str) -> tuple[Any, ...]:
        error = reply.json()["error"]
        return (
            reply.status,
            error["code"],
            error["message"].replace(rid, "<id>"),
            error["details"],
            sorted(set(error) - {"requestId"}),
            sorted(h for h in reply.headers if h not in ("Date", "X-Request-Id")),
        )

    assert not_mine.status == 404
    assert shape(not_mine, theirs) == shape(not_there, unknown)
    assert cluster.sim.requests(theirs) == []
    assert len(cluster.sim.requests(unknown)) == 1  # the unknown one was asked for, once


def test_query_token_streams_and_never_reaches_a_log(cluster_factory: Any) -> None:
    """?access_token= opens a stream; with debug and full access logs it is never printed."""
    cluster = cluster_factory(PROXY_LOG_LEVEL="debug", PROXY_ACCESS_LOG="all")
    proxy = cluster.start()
    cid, _ = cluster.sim.container(stages=LONG_RUNNING)
    token = acme_token(cid)
    url = f"{proxy.url}/v1/content/{cid}/progress/stream?access_token={token}"
    status, headers, text = read_event(url)
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    assert "event: progress" in text and cid in text
    forged = token[:-4] + "AAAA"
    assert read_event(url.replace(token, forged))[0] == 401
    assert http(f"{proxy.url}/v1/content/{cid}/progress?access_token={token}").status == 200
    proxy.stop()
    out = proxy.all_output()
    assert "request" in out  # the access log did run
    for secret in (token, forged, token.split(".")[2], forged.split(".")[2]):
        assert secret not in out


def test_cli_token_is_accepted(cluster_factory: Any) -> None:
    """`layers-proxy token` prints a token the proxy accepts for exactly what it names."""
    cluster = cluster_factory()
    proxy = cluster.start()
    cid, job = cluster.sim.container(stages=LONG_RUNNING)
    other, _ = cluster.sim.container(stages=LONG_RUNNING)
    argv = [sys.executable, "-m", "proxy", "token", "--config", str(cluster.config)]
    argv += ["--tenant", "acme", "--container", cid, "--job", job, "--ttl", "300"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=_clean_env())
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert token.count(".") == 2
    assert http(f"{proxy.url}/v1/content/{cid}/progress", token=token).status == 200
    assert http(f"{proxy.url}/v1/jobs/{job}", token=token).status == 200
    assert http(f"{proxy.url}/v1/content/{other}/progress", token=token).status == 404


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROXY_", "LAYERS_"))}
    return {**env, **extra}


@pytest.mark.parametrize(
    ("config", "place"),
    [
        (
            '[[tenants]]\nid = "acme"\nsecrets = ["too-short"]\n',
            "tenants[0] (acme).secrets[0]: too short",
        ),
        (
            f'[[tenants]]\nid = "acme"\nsecrets = ["{ACME_SECRET}"]\n'
            f'[[tenants]]\nid = "acme"\nsecrets = ["{ACME_SECRET}"]\n',
            "tenants[1] (acme): duplicate tenant id 'acme'",
        ),
        (
            f'[[tenants]]\nid = "acme"\nsecrets = ["{ACME_SECRET}"]\ncolour = "red"\n',
            "tenants[0]: unknown key 'colour'",
        ),
    ],
    ids=["short secret", "duplicate tenant", "unknown key"],
)
def test_invalid_tenant_config_stops_serve(config: str, place: str) -> None:
    """`layers-proxy serve` refuses a bad [[tenants]] table with exit 2 and names the place."""
    path = write_config(config)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "proxy", "serve", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            env=_clean_env(LAYERS_API_KEY=DEFAULT_KEY, PROXY_PORT="0"),
        )
    finally:
        path.unlink()
    assert done.returncode == 2
    assert "configuration error" in done.stderr
    assert f"{path}: {place}" in done.stderr
    assert "proxy listening" not in done.stdout
