"""The fast path answers plain cached polls exactly as the handlers do, and steps aside otherwise.

Every request goes to two replicas on the same Redis and simulator: one with the fast path, one
with ``PROXY_FAST_PATH=false``. Their answers must be the same (but for the request id, the
date and the age), and the fast replica's ``fast_answers`` counter says which path answered.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import pytest

from proxy.testing.processes import ManagedProcess
from tests.conftest import ProxyFactory, Sim
from tests.tenants.conftest import (  # cluster_factory is a fixture
    ACME_ORIGIN,
    GLOBEX_ORIGIN,
    acme_token,
    cluster_factory,  # noqa: F401
    globex_token,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

ADMIN = "admin-token-for-fast-path-0123456789"
_VARYING = {"date", "x-request-id", "age"}


async def _exchange(port: int, head: bytes) -> tuple[str, dict[str, str], bytes]:
    """One request on a new connection: status line, headers (lower-case), body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        async with asyncio.timeout(10):
            raw = await reader.readuntil(b"\r\n\r\n")
            status, *lines = raw[:-4].decode("latin-1").split("\r\n")
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            body = await reader.readexactly(length) if length else b""
    finally:
        writer.close()
    return status, headers, body


def _comparable(answer: tuple[str, dict[str, str], bytes]) -> tuple[str, dict[str, str], bytes]:
    status, headers, body = answer
    body = re.sub(rb'"requestId":"req_[0-9A-Z]+"', b'"requestId":"-"', body)
    return status, {k: v for k, v in headers.items() if k not in _VARYING}, body


async def _fast_answers(proxy: ManagedProcess) -> int:
    _, _, body = await _exchange(
        proxy.port,
        f"GET /admin/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\r\n".encode(),
    )
    return int(json.loads(body)["fast_answers"])


async def _same_answers(
    fast: ManagedProcess, slow: ManagedProcess, heads: list[tuple[bytes, bool]], tries: int = 1
) -> None:
    """Each head gets the same answer from both; the fast replica took only the ones marked,
    each within ``tries`` sends (token mode: a request without a permit in hand goes the slow
    way, so the permit batches decide how soon)."""
    count = await _fast_answers(fast)
    for head, eligible in heads:
        for _ in range(tries if eligible else 1):
            got_fast = _comparable(await _exchange(fast.port, head))
            got_slow = _comparable(await _exchange(slow.port, head))
            assert got_fast == got_slow, head
            now = await _fast_answers(fast)
            taken, count = now - count, now
            assert taken <= 1, head
            if taken:
                break
        assert taken == eligible, head
    assert await _fast_answers(slow) == 0


async def _warm(proxy: ManagedProcess, path: str, extra: str = "") -> dict[str, str]:
    """Poll until the snapshot is cached (a hit); its headers."""
    deadline = time.monotonic() + 15
    while True:
        _, headers, _ = await _exchange(
            proxy.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()
        )
        if headers.get("cache-status", "").endswith("; hit"):
            return headers
        assert time.monotonic() < deadline, headers
        await asyncio.sleep(0.1)


async def test_open_mode_answers_match_the_handlers(sim: Sim, proxies: ProxyFactory) -> None:
    fast = proxies(PROXY_ADMIN_TOKEN=ADMIN)
    slow = proxies(PROXY_ADMIN_TOKEN=ADMIN, PROXY_FAST_PATH="false")
    cid, job = sim.container([["generating_visuals", 600.0]])
    path, job_path = f"/v1/content/{cid}/progress", f"/v1/jobs/{job}"
    for proxy in (fast, slow):
        for p in (path, job_path):
            await _warm(proxy, p)
    etag = (await _warm(fast, path))["etag"]
    plain = f"GET {path} HTTP/1.1\r\nHost: x\r\n"
    heads = [
        (f"{plain}\r\n", True),
        (f"{plain}If-None-Match: {etag}\r\n\r\n", True),
        (f'{plain}If-None-Match: "other"\r\n\r\n', True),
        (f'{plain}If-None-Match: "a", W/{etag}\r\n\r\n', True),
        (f"{plain}If-None-Match: *\r\n\r\n", True),
        (
            f"GET {path} HTTP/1.1\r\nHOST: x\r\nif-none-match:{etag}\r\nUser-Agent: t\r\n"
            "Accept: */*\r\nConnection: keep-alive\r\n\r\n",
            True,
        ),
        (f"GET {job_path} HTTP/1.1\r\nHost: x\r\n\r\n", True),
        # Each of these takes the handlers' path on both replicas.
        (f"{plain}If-None-Match: {etag}\r\nPrefer: wait=0\r\n\r\n", False),
        (f"GET {path}?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", False),
        (f"GET {path} HTTP/1.0\r\n\r\n", False),
        (f"GET {path} HTTP/1.1\r\n\r\n", False),  # no Host
        (f"{plain}Connection: close\r\n\r\n", False),
        (f"{plain}If-None-Match: {etag}\r\nIf-None-Match: {etag}\r\n\r\n", False),
        (f"{plain}Content-Length: 0\r\n\r\n", False),
        ("GET /v1/content/not-an-id/progress HTTP/1.1\r\nHost: x\r\n\r\n", False),
        (f"GET /v1/content/{cid}/progress/ HTTP/1.1\r\nHost: x\r\n\r\n", False),
    ]
    await _same_answers(fast, slow, [(h.encode(), e) for h, e in heads])


async def test_token_mode_answers_match_the_handlers(cluster_factory: Any) -> None:  # noqa: F811
    cluster = cluster_factory(PROXY_ADMIN_TOKEN=ADMIN)
    fast = cluster.start()
    slow = cluster.start(PROXY_FAST_PATH="false")
    cid, _ = cluster.sim.container([["generating_visuals", 600.0]])
    path = f"/v1/content/{cid}/progress"
    token = acme_token(cid)
    auth = f"Authorization: Bearer {token}\r\n"
    for proxy in (fast, slow):
        await _warm(proxy, path, auth)
    plain = f"GET {path} HTTP/1.1\r\nHost: x\r\n"
    heads = [
        (f"{plain}{auth}\r\n", True),
        (f"{plain}{auth}Origin: {ACME_ORIGIN}\r\n\r\n", True),
        (f"{plain}{auth}Origin: {GLOBEX_ORIGIN}\r\n\r\n", True),
        (f"{plain}authorization: bearer {token}\r\n\r\n", True),
        # Refusals come from the handlers on both replicas.
        (f"{plain}\r\n", False),
        (f"{plain}Authorization: Bearer {globex_token(cid)}\r\n\r\n", False),
        (f"{plain}Authorization: Bearer {token[:-2]}xx\r\n\r\n", False),
        (f"{plain}Authorization: Basic {token}\r\n\r\n", False),
    ]
    await _same_answers(fast, slow, [(h.encode(), e) for h, e in heads], tries=30)


async def test_a_poll_behind_a_long_poll_is_answered_after_it(
    sim: Sim, proxies: ProxyFactory
) -> None:
    """A poll sent while a long-poll of the same connection waits is not answered first."""
    proxy = proxies()
    cid, _ = sim.container([["generating_visuals", 600.0]])
    path = f"/v1/content/{cid}/progress"
    etag = (await _warm(proxy, path))["etag"]
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n"
            "Prefer: wait=2\r\n\r\n".encode()
        )
        await writer.drain()
        await asyncio.sleep(0.3)  # the long-poll is in the handler; this one arrives alone
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        async with asyncio.timeout(10):
            first = await reader.readuntil(b"\r\n\r\n")
            assert b"Preference-Applied: wait=2" in first, first
    finally:
        writer.close()


async def test_fast_answered_connections_live_while_used_and_close_when_idle(
    sim: Sim, proxies: ProxyFactory
) -> None:
    """Keep-alive counts fast-path requests as use: polled past the idle timeout, the
    connection stays; left idle, it is closed after the timeout."""
    proxy = proxies(PROXY_KEEPALIVE_TIMEOUT_S="1", PROXY_ADMIN_TOKEN=ADMIN)
    cid, _ = sim.container([["generating_visuals", 600.0]])
    path = f"/v1/content/{cid}/progress"
    await _warm(proxy, path)
    before = await _fast_answers(proxy)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        started = time.monotonic()
        polls = 0
        while time.monotonic() - started < 3.0:  # three idle timeouts of use
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
            idle_from = time.monotonic()
            polls += 1
            await asyncio.sleep(0.3)
        assert await _fast_answers(proxy) - before == polls
        async with asyncio.timeout(10):
            assert await reader.read(4096) == b""  # closed by the proxy
        assert 0.9 <= time.monotonic() - idle_from <= 2.5
    finally:
        writer.close()
