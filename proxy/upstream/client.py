"""The upstream client: sends one authenticated GET and sorts the answer into an ``Outcome``.

The I/O is behind ``Transport`` so tests can substitute it. No exception text from the HTTP
library ever leaves this module: aiohttp's error reprs include request headers (the key).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson

from proxy.redaction import Secret
from proxy.resources import ResourceRef
from proxy.retry_after import parse_retry_after


class Outcome(enum.Enum):
    """What one upstream GET amounted to."""

    OK = "ok"
    NOT_MODIFIED = "not_modified"
    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    AUTH_REJECTED = "auth_rejected"
    SERVER_ERROR = "server_error"
    CLIENT_ERROR = "client_error"
    TIMEOUT = "timeout"
    NETWORK = "network"
    BAD_BODY = "bad_body"


@dataclass(frozen=True)
class RawResponse:
    """An HTTP answer as bytes, before any interpretation."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class UpstreamResult:
    """One classified upstream answer."""

    outcome: Outcome
    status: int = 0
    body: bytes = b""
    parsed: dict[str, Any] = field(default_factory=dict)
    etag: str = ""
    retry_after_s: float | None = None
    rate_remaining: int | None = None
    rate_reset_s: float | None = None
    request_id: str = ""
    error_code: str = ""
    elapsed_ms: float = 0.0
    detail: str = ""  # a short, secret-free description for logs and Cache-Status


class TransportTimeout(Exception):
    """The transport gave up waiting (no secret in the text)."""


class TransportFailure(Exception):
    """The connection failed (no secret in the text)."""


class Transport(Protocol):
    """The I/O seam: one GET."""

    async def get(self, url: str, headers: Mapping[str, str], timeout_s: float) -> RawResponse: ...

    async def close(self) -> None: ...


class AiohttpTransport:
    """The real transport, one pooled aiohttp session."""

    def __init__(self, *, max_connections: int, connect_timeout_s: float) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_connections, ttl_dns_cache=60),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s),
            auto_decompress=True,
            raise_for_status=False,
        )

    async def get(self, url: str, headers: Mapping[str, str], timeout_s: float) -> RawResponse:
        try:
            async with asyncio.timeout(timeout_s):
                async with self._session.get(url, headers=headers, allow_redirects=False) as resp:
                    body = await resp.read()
                    return RawResponse(resp.status, dict(resp.headers), body)
        except TimeoutError:
            raise TransportTimeout(f"no answer within {timeout_s:g}s") from None
        except (aiohttp.ClientError, OSError) as exc:
            # The class name is enough to diagnose; the text could carry headers.
            raise TransportFailure(type(exc).__name__) from None

    async def close(self) -> None:
        await self._session.close()


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


def _envelope_code(body: bytes) -> tuple[str, str]:
    try:
        parsed = orjson.loads(body)
        err = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(err, dict):
            return str(err.get("code", "")), str(err.get("requestId", ""))
    except orjson.JSONDecodeError:
        pass
    return "", ""


class UpstreamClient:
    """Fetches one resource from the Layers API with the org's key."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: Secret,
        transport: Transport,
        timeout_s: float,
        wall_clock: Any,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._transport = transport
        self._timeout_s = timeout_s
        self._wall = wall_clock

    async def close(self) -> None:
        """Close the transport."""
        await self._transport.close()

    async def fetch(self, ref: ResourceRef, *, if_none_match: str = "") -> UpstreamResult:
        """GET the resource and classify the answer; never raises for HTTP or network trouble."""
        return await self.fetch_path(
            ref.kind.upstream_path(ref.id), org=ref.org, if_none_match=if_none_match
        )

    async def fetch_path(
        self, path: str, *, org: str | None, if_none_match: str = ""
    ) -> UpstreamResult:
        """GET any upstream path with the key (and the org header when acting for one)."""
        headers = {
            "Authorization": "Bearer " + self._key.reveal(),
            "Accept": "application/json",
            "User-Agent": "layers-progress-proxy",
        }
        if org:
            headers["X-Layers-Organization"] = org
        if if_none_match:
            headers["If-None-Match"] = if_none_match
        url = self._base + path
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            raw = await self._transport.get(url, headers, self._timeout_s)
        except TransportTimeout:
            return UpstreamResult(
                Outcome.TIMEOUT,
                elapsed_ms=(loop.time() - started) * 1000,
                detail=f"timeout after {self._timeout_s:g}s",
            )
        except TransportFailure as exc:
            return UpstreamResult(
                Outcome.NETWORK,
                elapsed_ms=(loop.time() - started) * 1000,
                detail=f"connection failed ({exc})",
            )
        elapsed_ms = (loop.time() - started) * 1000
        return self.classify(raw, elapsed_ms)

    def classify(self, raw: RawResponse, elapsed_ms: float) -> UpstreamResult:
        """Sort an HTTP answer into an outcome (pure apart from the wall clock)."""
        h = {k.lower(): v for k, v in raw.headers.items()}
        common: dict[str, Any] = {
            "status": raw.status,
            "elapsed_ms": elapsed_ms,
            "etag": h.get("etag", ""),
            "rate_remaining": _int_header(h, "x-ratelimit-remaining"),
            "rate_reset_s": _int_header(h, "x-ratelimit-reset"),
            "request_id": h.get("x-request-id", ""),
        }
        status = raw.status
        if status == 200:
            try:
                parsed = orjson.loads(raw.body)
            except orjson.JSONDecodeError:
                return UpstreamResult(Outcome.BAD_BODY, detail="unparseable body", **common)
            if not isinstance(parsed, dict) or not isinstance(parsed.get("status"), str):
                return UpstreamResult(Outcome.BAD_BODY, detail="unexpected body shape", **common)
            return UpstreamResult(Outcome.OK, body=raw.body, parsed=parsed, **common)
        if status == 304:
            return UpstreamResult(Outcome.NOT_MODIFIED, **common)
        code, request_id = _envelope_code(raw.body)
        if request_id and not common["request_id"]:
            common["request_id"] = request_id
        if status == 404:
            return UpstreamResult(
                Outcome.NOT_FOUND,
                body=raw.body,
                error_code=code or "NOT_FOUND",
                detail="404",
                **common,
            )
        if status == 429:
            return UpstreamResult(
                Outcome.RATE_LIMITED,
                retry_after_s=parse_retry_after(h.get("retry-after"), now_wall_s=self._wall()),
                error_code=code or "RATE_LIMITED",
                detail="429",
                **common,
            )
        if status in (401, 403):
            return UpstreamResult(
                Outcome.AUTH_REJECTED, error_code=code, detail=f"{status} {code}".strip(), **common
            )
        if status >= 500:
            return UpstreamResult(
                Outcome.SERVER_ERROR, error_code=code, detail=f"{status} {code}".strip(), **common
            )
        return UpstreamResult(
            Outcome.CLIENT_ERROR, error_code=code, detail=f"{status} {code}".strip(), **common
        )
