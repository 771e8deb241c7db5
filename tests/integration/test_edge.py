"""The edge against real sockets: slow and idle clients, hostile headers, logs, signals."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from typing import Any

import aiohttp
import pytest

from proxy.testing.processes import ManagedProcess
from tests.conftest import ProxyFactory, Sim
from tests.integration.helpers import wait_until

pytestmark = [pytest.mark.integration]

ADMIN_TOKEN = "admin-token-for-edge-tests-0123456789"
TOKEN_LIKE = "eyJhbGciOiJIUzI1NiJ9.eyJ0ZW5hbnQiOiJhY21lIn0.c2VjcmV0LXNpZ25hdHVyZQ"


async def _raw(
    proxy: ManagedProcess, data: bytes, read_s: float = 2.0, until: bytes | None = None
) -> bytes:
    """Send ``data`` on a new connection; what was read by close, ``read_s`` or ``until``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(data)
    out = b""
    try:
        async with asyncio.timeout(read_s):
            while chunk := await reader.read(65536):
                out += chunk
                if until is not None and until in out:
                    break
    except TimeoutError:
        pass
    finally:
        writer.close()
    return out


def _status(raw: bytes) -> int:
    match = re.match(rb"HTTP/\d\.\d (\d{3})", raw)
    assert match is not None, raw[:200]
    return int(match.group(1))


def _body(raw: bytes) -> Any:
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])


async def _poll_ok(url: str, stop: asyncio.Event) -> list[float]:
    """GET ``url`` every 50 ms until ``stop``; the latency of each (asserting 200)."""
    latencies = []
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            started = time.monotonic()
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                assert resp.status == 200
                await resp.read()
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.05)
    return latencies


@pytest.mark.timeout(90)
async def test_slowloris_connections_are_cut_at_the_header_timeout(
    sim: Sim, proxies: ProxyFactory
) -> None:
    """1,000 connections trickling a header byte a second are closed after 2 s (+ sweep), with
    a 408 in the envelope; a normal client is served quickly all along."""
    timeout_s = 2.0
    proxy = proxies(PROXY_HEADER_TIMEOUT_S=str(timeout_s))
    cid, _ = sim.container([["generating_visuals", 60.0]])
    url = f"{proxy.url}/v1/content/{cid}/progress"
    await _raw(proxy, f"GET {url[len(proxy.url) :]} HTTP/1.0\r\n\r\n".encode())  # warm
    stop = asyncio.Event()
    poller = asyncio.create_task(_poll_ok(url, stop))

    async def slowloris() -> tuple[float, bytes]:
        # Timed from before the connect: with 1,000 of them under way this coroutine may
        # resume well after the proxy accepted (and started the head's clock).
        opened = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        answer = b""
        try:
            async with asyncio.timeout(timeout_s + 8):
                while True:
                    try:
                        chunk = await asyncio.wait_for(reader.read(4096), 1.0)
                    except TimeoutError:
                        writer.write(b"a")  # one more header byte a second
                        continue
                    if not chunk:
                        break
                    answer += chunk
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
        return time.monotonic() - opened, answer

    results = await asyncio.gather(*(slowloris() for _ in range(1000)))
    stop.set()
    latencies = await poller
    held = sorted(held for held, _ in results)
    assert held[0] >= timeout_s - 0.1  # not cut early
    # All cut within the sweep's 0.5 s tick, plus the time 1,000 connects may take under load.
    assert held[-1] <= timeout_s + 3.0, held[-10:]
    assert all(_status(answer) == 408 for _, answer in results)
    assert _body(results[0][1])["error"]["code"] == "REQUEST_TIMEOUT"
    assert len(latencies) >= 20 and max(latencies) < 2.0


@pytest.mark.timeout(60)
async def test_a_second_head_on_a_kept_alive_connection_is_timed_too(
    proxies: ProxyFactory,
) -> None:
    """After one answered request, the next head's clock starts at its first byte."""
    proxy = proxies(PROXY_HEADER_TIMEOUT_S="1.5", PROXY_KEEPALIVE_TIMEOUT_S="30")
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert _status(head) == 200
    # A window past the 1.5 s head timeout: idle between requests is keep-alive's business,
    # not the head's, so the connection must outlive it.
    await asyncio.sleep(3)
    assert not reader.at_eof()
    started = time.monotonic()
    writer.write(b"GET /hea")
    async with asyncio.timeout(10):
        while await reader.read(4096):
            pass
    assert 1.4 <= time.monotonic() - started <= 1.5 + 1.5
    writer.close()


@pytest.mark.timeout(60)
async def test_a_head_pipelined_behind_a_long_poll_waits_its_turn(
    sim: Sim, proxies: ProxyFactory
) -> None:
    """Bytes of a next request queued behind a 3 s long-poll do not get the connection cut;
    the head's clock starts once the long-poll is answered."""
    proxy = proxies(PROXY_HEADER_TIMEOUT_S="1.5")
    cid, _ = sim.container([["generating_visuals", 60.0]])
    raw = await _raw(proxy, f"GET /v1/content/{cid}/progress HTTP/1.0\r\n\r\n".encode())
    etag = re.search(rb"ETag: (\S+)", raw).group(1).decode()  # type: ignore[union-attr]
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    long_poll = (
        f"GET /v1/content/{cid}/progress HTTP/1.1\r\nHost: x\r\n"
        f"If-None-Match: {etag}\r\nPrefer: wait=3\r\n\r\n"
    )
    writer.write(long_poll.encode() + b"GET /healthz HT")
    sent = time.monotonic()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    answered = time.monotonic()
    assert _status(head) in (200, 304)
    if _status(head) == 304:
        assert answered - sent >= 2.5  # it really waited, past the header timeout
    async with asyncio.timeout(10):
        while await reader.read(4096):
            pass
    assert 1.4 <= time.monotonic() - answered <= 1.5 + 1.5
    writer.close()


@pytest.mark.timeout(60)
async def test_idle_keep_alive_connections_are_closed(proxies: ProxyFactory) -> None:
    """An idle kept-alive connection is closed after keepalive_timeout_s."""
    proxy = proxies(PROXY_KEEPALIVE_TIMEOUT_S="1")
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    answered = time.monotonic()
    async with asyncio.timeout(10):
        while await reader.read(4096):
            pass
    assert 0.9 <= time.monotonic() - answered <= 2.5
    writer.close()


@pytest.mark.timeout(60)
async def test_hostile_headers_get_4xx_envelopes(sim: Sim, proxies: ProxyFactory) -> None:
    """Each of these was a 500 (or aiohttp's text echoing the request line) before."""
    proxy = proxies()
    cid, _ = sim.container([["generating_visuals", 60.0]])

    raw = await _raw(proxy, b"GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: \xff\xfe\r\n\r\n")
    assert _status(raw) == 417 and _body(raw)["error"]["code"] == "VALIDATION"
    raw = await _raw(proxy, b"GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n")
    assert _status(raw) == 417

    raw = await _raw(
        proxy,
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
        read_s=1.0,
    )
    assert raw.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 405 ")

    for path in (f"/v1/stream?containers={cid}", f"/v1/content/{cid}/progress/stream"):
        for last_id in ("\u00b2", "1.\u00b2", "9" * 400, "1." * 3000):
            request = f"GET {path} HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {last_id}\r\n\r\n"
            raw = await _raw(proxy, request.encode(), read_s=10, until=b"data: ")
            assert _status(raw) == 200 and b"text/event-stream" in raw, (path, last_id)

    for prefer in ("wait=\u00b2", "wait=99999999999999", "wait=" * 3000):
        request = (
            f"GET /v1/content/{cid}/progress HTTP/1.1\r\nHost: x\r\n"
            f"If-None-Match: *\r\nPrefer: {prefer}\r\nConnection: close\r\n\r\n"
        )
        started = time.monotonic()
        raw = await _raw(proxy, request.encode(), read_s=3.0)
        assert _status(raw) == 304 and b"Preference-Applied" not in raw
        assert time.monotonic() - started < 1.0  # not a long-poll either

    raw = await _raw(proxy, f"GET /?access_token={TOKEN_LIKE} HTTP/1.1 junk\r\n\r\n".encode())
    assert _status(raw) == 400
    assert _body(raw)["error"]["details"] == {"reason": "BadStatusLine"}
    assert TOKEN_LIKE.encode() not in raw  # aiohttp's own answer quoted the line back

    raw = await _raw(proxy, b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n")
    assert _status(raw) == 400 and b"HTTP/1.0 and HTTP/1.1" in raw
    raw = await _raw(proxy, b"GET /admin/stats HTTP/1.1\r\nAuthorization: Bearer \xe9\r\n\r\n")
    assert _status(raw) == 400

    out = proxy.all_output()
    assert "Traceback" not in out and TOKEN_LIKE not in out and "c2VjcmV0" not in out


@pytest.mark.timeout(60)
async def test_parser_errors_are_logged_once_then_counted(proxies: ProxyFactory) -> None:
    """500 malformed requests with a token in the line: one JSON line, then a summary count."""
    proxy = proxies(PROXY_LOG_SUMMARY_INTERVAL_S="1")
    bad = f"GET /v1/stream?access_token={TOKEN_LIKE} HTTP/1.1 x\r\nHost: y\r\n\r\n".encode()
    answers = await asyncio.gather(*(_raw(proxy, bad) for _ in range(500)))
    assert {_status(a) for a in answers} == {400}

    def tally() -> tuple[int, int]:
        events = [json.loads(line) for line in proxy.lines if line.startswith("{")]
        logged = sum(e["event"] == "bad_request" for e in events)
        counted = sum(
            n
            for e in events
            if e["event"] == "log_summary"
            for kind, n in e["kinds"].items()
            if "BadStatusLine" in kind
        )
        return logged, counted

    # Every one of the 500 is accounted for: logged in full, or counted in a summary.
    assert await wait_until(lambda: sum(tally()) == 500, 10), tally()
    logged, counted = tally()
    assert logged <= 2 and counted >= 498  # one line per kind (two if it went quiet meanwhile)
    out = proxy.all_output()
    assert "Traceback" not in out and TOKEN_LIKE not in out and "access_token" not in out
    assert len(proxy.lines) < 20


async def _open_stream(
    session: aiohttp.ClientSession, url: str
) -> tuple[aiohttp.ClientResponse, list[bytes], asyncio.Task[None]]:
    """A stream, the lines it has sent so far, and a task that ends at the stream's EOF."""
    resp = await session.get(url)
    assert resp.status == 200
    seen: list[bytes] = []

    async def read() -> None:
        async for line in resp.content:
            seen.append(line)

    return resp, seen, asyncio.create_task(read())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_shutdown_ends_streams_with_a_retry_hint(
    sim: Sim, proxies: ProxyFactory, signum: signal.Signals
) -> None:
    """On SIGTERM/SIGINT open streams get ``retry:`` and EOF within 1 s; an in-flight
    long-poll still gets its answer; the app's cleanup runs; exit code 0."""
    proxy = proxies(PROXY_SHUTDOWN_TIMEOUT_S="5", PROXY_ADMIN_TOKEN=ADMIN_TOKEN)
    cid, jid = sim.container([["generating_visuals", 60.0]])
    base = proxy.url
    async with aiohttp.ClientSession() as session:

        async def long_polls() -> int:
            auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            async with session.get(f"{base}/admin/stats", headers=auth) as resp:
                return int((await resp.json())["long_polls"])

        async with session.get(f"{base}/v1/content/{cid}/progress") as resp:
            await resp.read()  # the cold fetch
        streams = [
            await _open_stream(session, f"{base}/v1/content/{cid}/progress/stream"),
            await _open_stream(session, f"{base}/v1/stream?containers={cid}&jobs={jid}"),
        ]
        # Both have sent their first events (retry hint, then data).
        assert await wait_until(lambda: all(b"data: " in b"".join(s) for _, s, _ in streams), 10)
        async with session.get(f"{base}/v1/content/{cid}/progress") as resp:
            etag = resp.headers["ETag"]  # the version now, so that the long-poll is held
        held_before = await long_polls()
        long_poll = asyncio.create_task(
            session.get(
                f"{base}/v1/content/{cid}/progress",
                headers={"If-None-Match": etag, "Prefer": "wait=2"},
            )
        )
        # The long-poll is in flight: the replica counts it when it starts holding it (for up
        # to 2 s; a new version in between answers it at once).
        deadline = time.monotonic() + 10
        while not long_poll.done() and await long_polls() == held_before:
            assert time.monotonic() < deadline, "the long-poll was never held"
            await asyncio.sleep(0.02)
        assert proxy.proc is not None
        proxy.proc.send_signal(signum)
        sent = time.monotonic()
        for _, lines, task in streams:
            await asyncio.wait_for(task, 2)
            assert time.monotonic() - sent < 1.0
            last = [line for line in lines if line.strip()][-1]
            assert last.startswith(b"retry: ")
            assert 500 <= int(last[7:]) <= 1000
        answer = await asyncio.wait_for(long_poll, 8)
        assert answer.status in (200, 304)
        answer.release()
        for resp, _, _ in streams:
            resp.release()
    code = await asyncio.to_thread(proxy.proc.wait, 15)
    assert code == 0
    out = proxy.all_output()
    assert '"event":"proxy_stopped"' in out  # the app's cleanup ran (leases handed back)
    assert '"streams_closed":2' in out
    assert "Traceback" not in out


@pytest.mark.timeout(60)
async def test_sighup_is_logged_and_ignored(proxies: ProxyFactory) -> None:
    """SIGHUP used to kill the process; now it logs one line and keeps serving."""
    proxy = proxies()
    assert proxy.proc is not None
    proxy.proc.send_signal(signal.SIGHUP)
    assert await wait_until(lambda: "sighup_ignored" in proxy.all_output(), 5)
    raw = await _raw(proxy, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert _status(raw) == 200
    assert proxy.proc.poll() is None
    assert proxy.all_output().count("sighup_ignored") == 1
    assert proxy.stop() == 0
