"""Streams end at their token's exp with TOKEN_EXPIRED; an expired token opens no stream.

Real processes (simulator, Redis, a token-mode proxy). Times are wall-clock seconds on this one
machine, compared with the token's ``exp``; "nothing after exp" allows 0.25 s for an event
written just before exp to arrive.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import orjson
import pytest

from proxy.tenancy.tokens import mint_token
from tests.tenants.conftest import ACME_SECRET, acme_token, http

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

LONG_RUNNING = [["generating_visuals", 600]]
DELIVERY_SLACK_S = 0.25  # an event written just before exp may arrive this much after it


@dataclass
class Frame:
    at: float  # wall clock of arrival
    fields: dict[str, Any] = field(default_factory=dict)
    comment: bool = False


@dataclass
class Read:
    status: int
    frames: list[Frame]
    eof: bool  # the server ended the stream (else the read limit passed)
    body: bytes = b""


def exp_of(token: str) -> float:
    return float(jwt.decode(token, options={"verify_signature": False})["exp"])


async def read_stream(
    session: aiohttp.ClientSession, url: str, token: str, limit_s: float, **headers: str
) -> Read:
    """Open ``url`` with ``token`` and collect frames (arrival times) until EOF or limit_s."""
    async with session.get(url, headers={"Authorization": f"Bearer {token}", **headers}) as resp:
        if resp.status != 200:
            return Read(resp.status, [], True, await resp.read())
        frames: list[Frame] = []
        current = Frame(0.0)
        try:
            async with asyncio.timeout(limit_s):
                async for raw in resp.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith(":"):
                        frames.append(Frame(time.time(), comment=True))
                    elif line:
                        name, _, value = line.partition(": ")
                        current.fields[name] = orjson.loads(value) if name == "data" else value
                    elif current.fields:
                        current.at = time.time()
                        frames.append(current)
                        current = Frame(0.0)
        except TimeoutError:
            return Read(200, frames, False)
        return Read(200, frames, True)


def assert_ended_at_exp(read: Read, exp: float) -> Frame:
    """The stream's last frame is TOKEN_EXPIRED, within 1 s after exp; nothing else after exp."""
    assert read.status == 200 and read.eof, read
    last = read.frames[-1]
    assert last.fields.get("event") == "error", last
    assert last.fields["data"]["error"]["code"] == "TOKEN_EXPIRED"
    assert set(last.fields["data"]["error"]) == {"code", "message", "requestId"}
    assert "id" not in last.fields  # Last-Event-ID stays at the last real event
    assert exp <= last.at <= exp + 1.0, (last.at - exp, last)
    print(f"TOKEN_EXPIRED arrived {last.at - exp:.3f} s after exp")
    events = [f for f in read.frames[:-1] if not f.comment and "event" in f.fields]
    assert events and all(f.fields["event"] != "error" for f in events)
    late = [f for f in read.frames[:-1] if f.at > exp + DELIVERY_SLACK_S]
    assert not late, [(f.at - exp, f.fields) for f in late]
    return last


async def test_single_stream_ends_at_exp_and_a_long_token_is_unaffected(
    cluster_factory: Any,
) -> None:
    """A 3 s token's stream gets TOKEN_EXPIRED within exp+1 s and ends; reconnecting is 401;
    a 600 s token's stream on the same container keeps streaming past that exp."""
    cluster = cluster_factory()
    proxy = cluster.start(PROXY_SSE_HEARTBEAT_S="0.5")
    cid, _ = cluster.sim.container(LONG_RUNNING)
    short, long = acme_token(cid, ttl_s=3), acme_token(cid, ttl_s=600)
    exp = exp_of(short)
    url = f"{proxy.url}/v1/content/{cid}/progress/stream"
    async with aiohttp.ClientSession() as session:
        short_read, long_read = await asyncio.gather(
            read_stream(session, url, short, 10),
            read_stream(session, url, long, max(1.0, exp + 2.5 - time.time())),
        )
        assert_ended_at_exp(short_read, exp)
        assert not long_read.eof, "the long token's stream ended"
        assert any(f.at > exp + 1.5 for f in long_read.frames), "the long stream went quiet"
        last_id = [f.fields["id"] for f in short_read.frames if "id" in f.fields][-1]
        again = await read_stream(session, url, short, 5, **{"Last-Event-ID": last_id})
    assert again.status == 401, again
    assert orjson.loads(again.body)["error"]["code"] == "UNAUTHENTICATED"


async def test_multiplexed_stream_ends_at_exp(cluster_factory: Any) -> None:
    """/v1/stream with a 3 s token: the same end; the reconnect with its vector id is 401."""
    cluster = cluster_factory()
    proxy = cluster.start(PROXY_SSE_HEARTBEAT_S="0.5")
    c1, j1 = cluster.sim.container(LONG_RUNNING)
    c2, _ = cluster.sim.container(LONG_RUNNING)
    token = acme_token(c1, c2, jobs=(j1,), ttl_s=3)
    exp = exp_of(token)
    url = f"{proxy.url}/v1/stream?containers={c1},{c2}&jobs={j1}"
    async with aiohttp.ClientSession() as session:
        read = await read_stream(session, url, token, 10)
        assert_ended_at_exp(read, exp)
        names = {f.fields["event"] for f in read.frames if "event" in f.fields}
        assert names == {"progress", "job", "error"}
        ids = [f.fields["id"] for f in read.frames if "id" in f.fields]
        again = await read_stream(session, url, token, 5, **{"Last-Event-ID": ids[-1]})
    assert again.status == 401, again


async def test_a_token_within_the_leeway_after_exp_polls_but_opens_no_stream(
    cluster_factory: Any,
) -> None:
    """2-3 s past exp (inside the 5 s clock-skew leeway): a poll is still answered, but a
    stream would have to end before its first event, so it is refused with 401."""
    cluster = cluster_factory()
    proxy = cluster.start()
    cid, _ = cluster.sim.container(LONG_RUNNING)
    token = mint_token(
        tenant="acme", secret=ACME_SECRET, containers=[cid], ttl_s=3, now=time.time() - 5
    )
    assert exp_of(token) < time.time() - 1
    assert http(f"{proxy.url}/v1/content/{cid}/progress", token=token).status == 200
    async with aiohttp.ClientSession() as session:
        for url in (
            f"{proxy.url}/v1/content/{cid}/progress/stream",
            f"{proxy.url}/v1/stream?containers={cid}",
        ):
            read = await read_stream(session, url, token, 5)
            assert read.status == 401, (url, read)
            error = orjson.loads(read.body)["error"]
            assert error["code"] == "UNAUTHENTICATED"
            assert error["message"] == "The capability token is invalid or expired."
