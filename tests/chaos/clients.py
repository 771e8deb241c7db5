"""Recording clients: pollers, long-pollers and SSE clients that keep everything they saw.

Each client runs as an asyncio task until its group is stopped (or, like a browser, until the
resource is terminal) and appends one ``Observation`` per answer or stream event to a shared
``Recording``. Nothing is judged here; ``history.check_history`` does that afterwards.

Times are ``time.monotonic()``, which on Linux is the same clock the simulator stamps its request
log with (``t_mono``), so client and upstream histories line up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

TERMINAL = frozenset({"completed", "failed", "canceled"})
SERVER_SIDE_CODES = frozenset(
    {
        "INTERNAL",
        "UNAVAILABLE",
        "UPSTREAM_UNAVAILABLE",
        "UPSTREAM_TIMEOUT",
        "UPSTREAM_AUTH",
        "UPSTREAM_RATE_LIMITED",
    }
)


@dataclass
class Observation:
    """One answer a client got (a poll response or one stream event)."""

    t: float  # monotonic time the answer (or event) arrived
    client: str
    resource: str
    mode: str  # "poll", "longpoll" or "sse"
    status: int  # HTTP status; 0 = no answer (connection failed, timed out)
    body: Any = None  # parsed JSON: the progress body, event data or error envelope
    parse_error: str | None = None  # set when a 200 body or event data was not JSON
    event: str | None = None  # SSE event name ("progress", "error", ...)
    latency_s: float = 0.0  # request sent → answer (polls only)
    headers: Mapping[str, str] = field(default_factory=dict)
    raw: bytes = b""
    error: str | None = None  # exception name for status 0
    sent_at: float = 0.0

    @property
    def carries_body(self) -> bool:
        """True for a 200 poll answer and for a progress/job stream event."""
        if self.status != 200:
            return False
        return self.mode != "sse" or self.event in ("progress", "job")

    @property
    def error_code(self) -> str | None:
        """The envelope's error code, for errors and SSE error events."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            code = self.body["error"].get("code")
            return str(code) if code is not None else None
        return None

    @property
    def is_failure(self) -> bool:
        """A 5xx, no answer at all, or a server-side SSE error event."""
        if self.status == 0 or self.status >= 500:
            return True
        return self.event == "error" and self.error_code in SERVER_SIDE_CODES

    def failure_text(self) -> str:
        """A short description for reports."""
        if self.status == 0:
            return f"no answer ({self.error}) after {self.latency_s:.2f}s"
        what = f"event {self.event}" if self.event else f"HTTP {self.status}"
        return f"{what} {self.error_code or ''} after {self.latency_s:.2f}s".replace("  ", " ")

    def raw_text(self) -> str:
        """Body and headers as one string (for secret scans)."""
        head = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
        return head + "\n" + self.raw.decode("utf-8", "replace")


@dataclass
class ClientInfo:
    """Who a client was: what it watched, how, and while when."""

    name: str
    mode: str
    resources: tuple[str, ...]
    base_url: str
    started: float = 0.0
    stopped: float = 0.0
    reconnects: list[float] = field(default_factory=list)  # SSE: when a stream ended or broke
    heartbeats: list[float] = field(default_factory=list)  # SSE: comment lines received


@dataclass
class Recording:
    """Everything every client saw."""

    observations: list[Observation] = field(default_factory=list)
    clients: dict[str, ClientInfo] = field(default_factory=dict)

    def add(self, obs: Observation) -> None:
        """Append one observation."""
        self.observations.append(obs)

    def of(self, client: str | None = None, resource: str | None = None) -> list[Observation]:
        """Observations, optionally of one client and/or one resource."""
        return [
            o
            for o in self.observations
            if (client is None or o.client == client)
            and (resource is None or o.resource == resource)
        ]

    def between(self, start: float, end: float, mode: str | None = None) -> list[Observation]:
        """Observations that arrived within [start, end], optionally of one mode."""
        return [
            o for o in self.observations if start <= o.t <= end and (mode is None or o.mode == mode)
        ]


def _parse(raw: bytes) -> tuple[Any, str | None]:
    try:
        return json.loads(raw), None
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"not JSON ({type(exc).__name__}): {raw[:60]!r}"


class ClientGroup:
    """Starts recording clients on one aiohttp session and stops them all together."""

    def __init__(
        self,
        recording: Recording | None = None,
        *,
        poll_timeout_s: float = 5.0,
        auth: Mapping[str, str] | None = None,
    ) -> None:
        self.recording = recording or Recording()
        self.poll_timeout_s = poll_timeout_s
        self.auth = dict(auth or {})
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._rng = random.Random(8)

    async def __aenter__(self) -> ClientGroup:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared session."""
        assert self._session is not None, "use `async with ClientGroup() as group`"
        return self._session

    def _info(self, name: str, mode: str, resources: Sequence[str], base_url: str) -> ClientInfo:
        if name in self.recording.clients:
            raise ValueError(f"client name {name!r} used twice")
        info = ClientInfo(name, mode, tuple(resources), base_url)
        self.recording.clients[name] = info
        return info

    def _spawn(self, coro: Any, info: ClientInfo) -> None:
        async def run() -> None:
            info.started = time.monotonic()
            try:
                await coro
            finally:
                info.stopped = time.monotonic()

        self._tasks.append(asyncio.create_task(run(), name=info.name))

    async def _pause(self, seconds: float) -> bool:
        """Sleep unless stopped; True when stopped."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()
        return self._stop.is_set()

    def headers(
        self, extra: Mapping[str, str] | None = None, token: str | None = None
    ) -> dict[str, str]:
        """The group's auth headers (or a given token's), plus ``extra``."""
        out = dict(self.auth)
        if token is not None:
            out["Authorization"] = f"Bearer {token}"
        out.update(extra or {})
        return out

    # -- the clients ---------------------------------------------------------------------------

    def poller(
        self,
        name: str,
        base_url: str,
        container_id: str,
        *,
        every_s: float = 0.5,
        token: str | None = None,
        stop_at_terminal: bool = True,
    ) -> ClientInfo:
        """GET /v1/content/{id}/progress every ``every_s`` with If-None-Match."""
        info = self._info(name, "poll", [container_id], base_url)
        url = f"{base_url}/v1/content/{container_id}/progress"
        self._spawn(self._poll_loop(info, url, every_s, token, stop_at_terminal, wait_s=None), info)
        return info

    def long_poller(
        self,
        name: str,
        base_url: str,
        container_id: str,
        *,
        wait_s: int = 10,
        token: str | None = None,
    ) -> ClientInfo:
        """GET with If-None-Match + ``Prefer: wait=N``, again as soon as each answer arrives."""
        info = self._info(name, "longpoll", [container_id], base_url)
        url = f"{base_url}/v1/content/{container_id}/progress"
        self._spawn(self._poll_loop(info, url, 0.0, token, True, wait_s=wait_s), info)
        return info

    async def _poll_loop(
        self,
        info: ClientInfo,
        url: str,
        every_s: float,
        token: str | None,
        stop_at_terminal: bool,
        wait_s: int | None,
    ) -> None:
        resource = info.resources[0]
        mode = info.mode
        etag = ""
        # Spread the clients over the interval, as independent browsers would be.
        if await self._pause(self._rng.uniform(0, max(every_s, 0.3))):
            return
        while not self._stop.is_set():
            extra: dict[str, str] = {}
            if etag:
                extra["If-None-Match"] = etag
                if wait_s is not None:
                    extra["Prefer"] = f"wait={wait_s}"
            timeout = self.poll_timeout_s + (wait_s or 0)
            sent = time.monotonic()
            obs: Observation
            try:
                async with self.session.get(
                    url,
                    headers=self.headers(extra, token),
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as resp:
                    raw = await resp.read()
                    now = time.monotonic()
                    body, problem = (None, None)
                    if raw:
                        body, problem = _parse(raw)
                    obs = Observation(
                        t=now,
                        client=info.name,
                        resource=resource,
                        mode=mode,
                        status=resp.status,
                        body=body,
                        parse_error=problem if resp.status == 200 else None,
                        latency_s=now - sent,
                        headers=dict(resp.headers),
                        raw=raw,
                        sent_at=sent,
                    )
                    if resp.status == 200:
                        etag = resp.headers.get("ETag", "")
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                now = time.monotonic()
                obs = Observation(
                    t=now,
                    client=info.name,
                    resource=resource,
                    mode=mode,
                    status=0,
                    error=type(exc).__name__,
                    latency_s=now - sent,
                    sent_at=sent,
                )
            self.recording.add(obs)
            body = obs.body
            if (
                stop_at_terminal
                and obs.status == 200
                and isinstance(body, dict)
                and body.get("containerId") == resource
                and body.get("status") in TERMINAL
            ):
                return
            pause = every_s
            if wait_s is not None and obs.status != 200 and obs.status != 304:
                pause = 0.5  # an error: do not hammer
            if await self._pause(pause):
                return

    def sse(
        self,
        name: str,
        base_url: str,
        containers: Sequence[str],
        *,
        token: str | None = None,
        token_in_query: bool = False,
    ) -> ClientInfo:
        """An EventSource: one container's stream, or ``/v1/stream`` for several."""
        if len(containers) == 1:
            url = f"{base_url}/v1/content/{containers[0]}/progress/stream"
        else:
            url = f"{base_url}/v1/stream?containers={','.join(containers)}"
        if token is not None and token_in_query:
            url += ("&" if "?" in url else "?") + f"access_token={token}"
            token = None
        info = self._info(name, "sse", containers, base_url)
        self._spawn(self._sse_loop(info, url, token), info)
        return info

    async def _sse_loop(self, info: ClientInfo, url: str, token: str | None) -> None:
        single = len(info.resources) == 1
        wanted = set(info.resources)
        done: set[str] = set()
        last_id = ""
        retry_s = 1.0
        while not self._stop.is_set() and done != wanted:
            extra = {"Accept": "text/event-stream"}
            if last_id:
                extra["Last-Event-ID"] = last_id
            sent = time.monotonic()
            opened = False
            try:
                async with self.session.get(
                    url,
                    headers=self.headers(extra, token),
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=None),
                ) as resp:
                    if resp.status != 200:
                        raw = await resp.read()
                        now = time.monotonic()
                        body, _ = _parse(raw) if raw else (None, None)
                        for resource in info.resources:
                            self.recording.add(
                                Observation(
                                    t=now,
                                    client=info.name,
                                    resource=resource,
                                    mode="sse",
                                    status=resp.status,
                                    body=body,
                                    latency_s=now - sent,
                                    headers=dict(resp.headers),
                                    raw=raw,
                                    sent_at=sent,
                                )
                            )
                        if resp.status == 204:
                            return  # EventSource stops for good on 204
                    else:
                        opened = True
                        headers = dict(resp.headers)
                        async for event in _events(resp):
                            now = time.monotonic()
                            if event.comment:
                                info.heartbeats.append(now)
                                continue
                            if event.retry_ms is not None:
                                retry_s = event.retry_ms / 1000
                            if event.id is not None:
                                last_id = event.id
                            if event.data is None:
                                continue
                            body, problem = _parse(event.data)
                            resource = info.resources[0]
                            if not single and isinstance(body, dict):
                                # Error events carry the id beside the error object too.
                                rid = body.get("containerId") or body.get("jobId")
                                resource = rid if rid in wanted else f"{info.name}:unexpected"
                            self.recording.add(
                                Observation(
                                    t=now,
                                    client=info.name,
                                    resource=str(resource),
                                    mode="sse",
                                    status=200,
                                    body=body,
                                    parse_error=problem,
                                    event=event.name,
                                    headers=headers,
                                    raw=event.data,
                                    sent_at=sent,
                                )
                            )
                            if (
                                isinstance(body, dict)
                                and event.name == "progress"
                                and body.get("status") in TERMINAL
                                and resource in wanted
                            ):
                                done.add(str(resource))
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                if not opened:
                    now = time.monotonic()
                    for resource in info.resources:
                        self.recording.add(
                            Observation(
                                t=now,
                                client=info.name,
                                resource=resource,
                                mode="sse",
                                status=0,
                                error=type(exc).__name__,
                                latency_s=now - sent,
                                sent_at=sent,
                            )
                        )
            info.reconnects.append(time.monotonic())
            if done == wanted:
                return
            if await self._pause(retry_s):
                return

    # -- stopping ------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop every client (in-flight long-polls and streams are cancelled)."""
        self._stop.set()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=1.0)
        for task in pending:
            task.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result


@dataclass
class _Event:
    name: str = "message"
    data: bytes | None = None
    id: str | None = None
    retry_ms: int | None = None
    comment: bool = False


async def _events(resp: aiohttp.ClientResponse) -> Any:
    """Parse an event stream (WHATWG rules, enough of them), chunk by chunk."""
    buffer = b""
    event = _Event()
    data_lines: list[bytes] = []
    async for chunk in resp.content.iter_any():
        buffer += chunk
        while True:
            cut = buffer.find(b"\n")
            if cut < 0:
                break
            line, buffer = buffer[:cut].rstrip(b"\r"), buffer[cut + 1 :]
            if not line:
                if data_lines or event.id is not None or event.retry_ms is not None:
                    event.data = b"\n".join(data_lines) if data_lines else None
                    yield event
                event, data_lines = _Event(), []
                continue
            if line.startswith(b":"):
                yield _Event(comment=True)
                continue
            name, _, value = line.partition(b":")
            value = value.removeprefix(b" ")
            if name == b"data":
                data_lines.append(value)
            elif name == b"event":
                event.name = value.decode()
            elif name == b"id":
                event.id = value.decode()
            elif name == b"retry" and value.isdigit():
                event.retry_ms = int(value)
