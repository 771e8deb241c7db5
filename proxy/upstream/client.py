"""The upstream client: sends one authenticated GET and sorts the answer into an ``Outcome``.

The upstream is untrusted input: a 200 is checked (size, JSON, the documented fields and types,
the id asked for) before anyone may cache it, and the key is redacted from every body and header
value the client hands back, so nothing forwarded can carry it. The I/O is behind ``Transport``
so tests can substitute it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.redaction import KeyRedactor, Secret
from proxy.resources import BodyShape, ResourceRef, shape_for_path
from proxy.retry_after import parse_retry_after
from proxy.settings import Settings
from proxy.upstream.slots import Slot, SlotPools
from proxy.upstream.transport import (
    AiohttpTransport,
    RawResponse,
    Transport,
    TransportFailure,
    TransportTimeout,
)

__all__ = [
    "AiohttpTransport",
    "Outcome",
    "RawResponse",
    "Slot",
    "Transport",
    "TransportFailure",
    "TransportTimeout",
    "UpstreamClient",
    "UpstreamResult",
]

SAMPLE_BYTES = 200  # how much of a bad body a log line may quote (after redaction)
_MAX_CODE_CHARS = 64  # an upstream error code is logged; never let it be a whole body


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
class UpstreamResult:
    """One classified upstream answer; every text field is redacted."""

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
    sample: str = ""  # BAD_BODY only: the start of the offending body, for one log line


def _int_header(headers: dict[str, str], name: str) -> int | None:
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
    """Fetches one resource from the Layers API with the org's key.

    Connection slots: the caller takes one with ``acquire_slot`` before it claims a poll in
    Redis, so a poll never waits for a connection after spending its turn::

        slot = await client.acquire_slot(failing=lease.failures > 0)
        if slot is None:
            ...  # no connection free within pool_wait_s: try again later, nothing spent
        with slot:
            ...  # claim the poll, then
            result = await client.fetch(ref)

    Resources whose last poll failed draw from a pool of ``failing_connections`` slots, all
    others from the remaining ``max_connections - failing_connections`` (at least one), so
    hung resources cannot starve healthy ones. ``fetch`` itself does not take a slot.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: Secret,
        transport: Transport,
        timeout_s: float,
        wall_clock: Callable[[], float],
        max_body_bytes: int = Settings.upstream_max_body_bytes,
        max_connections: int = Settings.upstream_max_connections,
        failing_connections: int = Settings.upstream_failing_connections,
        pool_wait_s: float = Settings.upstream_pool_wait_s,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._redactor = KeyRedactor(api_key)
        self._transport = transport
        self._timeout_s = timeout_s
        self._wall = wall_clock
        self._max_body = max_body_bytes
        self._pool_wait_s = pool_wait_s
        self.slots = SlotPools.split(max_connections, failing_connections)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        wall_clock: Callable[[], float],
        transport: Transport | None = None,
    ) -> UpstreamClient:
        """A client configured from ``settings``, on a real transport unless one is given.

        The real transport's connector allows every slot of both pools, so the slot pools, not
        the connector, are what waits.
        """
        slots = SlotPools.split(
            settings.upstream_max_connections, settings.upstream_failing_connections
        )
        return cls(
            base_url=settings.layers_api_url,
            api_key=settings.layers_api_key,
            transport=transport
            or AiohttpTransport(
                max_connections=slots.capacity,
                connect_timeout_s=settings.upstream_connect_timeout_s,
                read_timeout_s=settings.upstream_read_timeout_s,
                pool_wait_s=settings.upstream_pool_wait_s,
                max_body_bytes=settings.upstream_max_body_bytes,
            ),
            timeout_s=settings.upstream_timeout_s,
            wall_clock=wall_clock,
            max_body_bytes=settings.upstream_max_body_bytes,
            max_connections=settings.upstream_max_connections,
            failing_connections=settings.upstream_failing_connections,
            pool_wait_s=settings.upstream_pool_wait_s,
        )

    async def close(self) -> None:
        """Close the transport."""
        await self._transport.close()

    async def acquire_slot(
        self, *, failing: bool = False, wait_s: float | None = None
    ) -> Slot | None:
        """A connection slot from the failing or the healthy pool, or None.

        Waits at most ``wait_s`` (default ``upstream_pool_wait_s``) for one to come free.
        """
        wait = self._pool_wait_s if wait_s is None else wait_s
        return await self.slots.acquire(failing=failing, wait_s=wait)

    async def fetch(self, ref: ResourceRef, *, if_none_match: str = "") -> UpstreamResult:
        """GET the resource and classify the answer; never raises for HTTP or network trouble.

        A kind that keeps only part of a body (an owner lookup) gets that part, re-serialised.
        """
        result = await self.fetch_path(
            ref.kind.upstream_path(ref.id),
            org=ref.org,
            if_none_match=if_none_match,
            shape=ref.kind.shape,
            expected_id=ref.id,
        )
        if result.outcome is Outcome.OK:
            kept = ref.kind.kept(result.parsed)
            if kept is not None:
                result = dataclasses.replace(result, parsed=kept, body=orjson.dumps(kept))
        return result

    async def fetch_path(
        self,
        path: str,
        *,
        org: str | None,
        if_none_match: str = "",
        shape: BodyShape | None = None,
        expected_id: str = "",
    ) -> UpstreamResult:
        """GET any upstream path with the key (and the org header when acting for one).

        A 200 must match ``shape`` and name ``expected_id``; without them both are inferred
        from ``path`` when it is a known one (progress, job, container record), and any other
        path's 200 need only be a JSON object.
        """
        if shape is None:
            inferred = shape_for_path(path)
            if inferred is not None:
                shape, expected_id = inferred
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            raw = await self._transport.get(
                self._base + path, self._headers(org, if_none_match), self._timeout_s
            )
        except TransportTimeout as exc:
            elapsed_ms = (loop.time() - started) * 1000
            return UpstreamResult(Outcome.TIMEOUT, elapsed_ms=elapsed_ms, detail=f"timeout: {exc}")
        except TransportFailure as exc:
            elapsed_ms = (loop.time() - started) * 1000
            return UpstreamResult(
                Outcome.NETWORK, elapsed_ms=elapsed_ms, detail=f"connection failed ({exc})"
            )
        elapsed_ms = (loop.time() - started) * 1000
        return self.classify(raw, elapsed_ms, shape=shape, expected_id=expected_id)

    def _headers(self, org: str | None, if_none_match: str) -> dict[str, str]:
        headers = {
            "Authorization": "Bearer " + self._key.reveal(),
            "Accept": "application/json",
            "User-Agent": "layers-progress-proxy",
        }
        if org:
            headers["X-Layers-Organization"] = org
        if if_none_match:
            headers["If-None-Match"] = if_none_match
        return headers

    def classify(
        self,
        raw: RawResponse,
        elapsed_ms: float,
        *,
        shape: BodyShape | None = None,
        expected_id: str = "",
    ) -> UpstreamResult:
        """Sort an HTTP answer into an outcome (pure apart from the wall clock).

        ``shape`` and ``expected_id`` say what a 200 must be; without a shape a 200 need only
        be a JSON object.
        """
        h = {k.lower(): v for k, v in raw.headers.items()}
        common: dict[str, Any] = {
            "status": raw.status,
            "elapsed_ms": elapsed_ms,
            "etag": self._redactor.text(h.get("etag", "")),
            "rate_remaining": _int_header(h, "x-ratelimit-remaining"),
            "rate_reset_s": _int_header(h, "x-ratelimit-reset"),
            "request_id": self._redactor.text(h.get("x-request-id", "")),
        }
        status = raw.status
        oversize = raw.oversize or len(raw.body) > self._max_body
        if oversize and status in (200, 404):  # the two answers whose body gets cached
            return UpstreamResult(
                Outcome.BAD_BODY, detail=f"body over {self._max_body} bytes", **common
            )
        if status == 200:
            return self._classify_ok(raw.body, common, shape, expected_id)
        if status == 304:
            return UpstreamResult(Outcome.NOT_MODIFIED, **common)
        return self._classify_error(raw, h, common, oversize)

    def _classify_error(
        self, raw: RawResponse, h: dict[str, str], common: dict[str, Any], oversize: bool
    ) -> UpstreamResult:
        """A non-200 answer; only a 404's body is kept (it is cached), redacted."""
        status = raw.status
        code, request_id = _envelope_code(b"" if oversize else raw.body)
        code = self._redactor.text(code)[:_MAX_CODE_CHARS]
        if request_id and not common["request_id"]:
            common["request_id"] = self._redactor.text(request_id)[:_MAX_CODE_CHARS]
        if status == 404:
            return UpstreamResult(
                Outcome.NOT_FOUND,
                body=self._redactor.body(raw.body),
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
            outcome = Outcome.AUTH_REJECTED
        elif status >= 500:
            outcome = Outcome.SERVER_ERROR
        else:
            outcome = Outcome.CLIENT_ERROR
        detail = f"{status} {code}".strip()
        return UpstreamResult(outcome, error_code=code, detail=detail, **common)

    def _classify_ok(
        self, raw_body: bytes, common: dict[str, Any], shape: BodyShape | None, expected_id: str
    ) -> UpstreamResult:
        """OK with the (redacted) body, or BAD_BODY saying why it may not be cached."""
        try:
            decoded = orjson.loads(raw_body)
        except orjson.JSONDecodeError:
            sample = self._sample(self._redactor.body(raw_body))
            return UpstreamResult(
                Outcome.BAD_BODY, detail="unparseable body", sample=sample, **common
            )
        parsed, changed = self._redactor.json(decoded)
        # Re-serialised only when redaction changed something; otherwise the exact bytes.
        body = orjson.dumps(parsed) if changed else raw_body
        if shape is not None:
            problem = shape.problem(parsed, expected_id)
        else:
            problem = "" if isinstance(parsed, dict) else "body is not a JSON object"
        if problem:
            return UpstreamResult(
                Outcome.BAD_BODY, detail=problem, sample=self._sample(body), **common
            )
        return UpstreamResult(Outcome.OK, body=body, parsed=parsed, **common)

    @staticmethod
    def _sample(redacted: bytes) -> str:
        return redacted[:SAMPLE_BYTES].decode("utf-8", "replace")
