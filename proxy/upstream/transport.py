"""The I/O seam of the upstream client: one GET, bounded in time and in size.

No exception text from the HTTP library ever leaves this module: aiohttp's error reprs include
the request headers, so the key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from proxy.settings import Settings


@dataclass(frozen=True)
class RawResponse:
    """An HTTP answer as bytes, before any interpretation.

    ``oversize`` is True when the body was over the transport's limit; ``body`` is then empty
    (the rest was never read).
    """

    status: int
    headers: Mapping[str, str]
    body: bytes
    oversize: bool = False


class TransportTimeout(Exception):
    """The transport gave up waiting (no secret in the text)."""


class TransportFailure(Exception):
    """The connection failed (no secret in the text)."""


class _Dropped(Exception):
    """A connection dropped mid-request, raised past aiohttp's own resend (class name only)."""


async def _no_resend(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    """Turn a dropped connection into an error aiohttp does not resend on.

    aiohttp silently resends an idempotent request once when a pooled connection drops
    (aio-libs/aiohttp#10790; the only switch is private): two upstream GETs milliseconds apart
    would break the 1 s floor and spend the budget twice. It resends on ``ClientOSError`` and
    ``ServerDisconnectedError`` from the request handler, which this client middleware wraps.
    """
    try:
        return await handler(request)
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
        raise _Dropped(type(exc).__name__) from None


class Transport(Protocol):
    """One GET; ``timeout_s`` bounds the whole request, body included."""

    async def get(self, url: str, headers: Mapping[str, str], timeout_s: float) -> RawResponse: ...

    async def close(self) -> None: ...


class AiohttpTransport:
    """The real transport: one pooled aiohttp session with every phase of a request bounded.

    - connect: ``connect_timeout_s`` (TCP and TLS);
    - waiting for a pooled connection: ``pool_wait_s`` (the slot pools in front normally keep
      the connector from ever waiting, see ``UpstreamClient.acquire_slot``);
    - first byte and each later read: ``read_timeout_s``, so a dripping body that stalls fails;
    - the whole request: the ``timeout_s`` of each call;
    - body: at most ``max_body_bytes``, checked against Content-Length before reading and
      while reading (never more than ``max_body_bytes + 1`` bytes are read).
    """

    def __init__(
        self,
        *,
        max_connections: int,
        connect_timeout_s: float,
        read_timeout_s: float = Settings.upstream_read_timeout_s,
        pool_wait_s: float = Settings.upstream_pool_wait_s,
        max_body_bytes: int = Settings.upstream_max_body_bytes,
    ) -> None:
        self.connection_limit = max_connections
        self._connect_s = connect_timeout_s
        self._read_s = read_timeout_s
        self._max_body = max_body_bytes
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_connections, ttl_dns_cache=60),
            timeout=aiohttp.ClientTimeout(
                total=None,
                # aiohttp's "connect" includes the wait for a free connection in its pool.
                connect=pool_wait_s + connect_timeout_s,
                sock_connect=connect_timeout_s,
                sock_read=read_timeout_s,
            ),
            auto_decompress=True,
            raise_for_status=False,
            middlewares=(_no_resend,),
        )

    async def get(self, url: str, headers: Mapping[str, str], timeout_s: float) -> RawResponse:
        """GET ``url``; raises only ``TransportTimeout`` or ``TransportFailure``."""
        try:
            async with asyncio.timeout(timeout_s):
                async with self._session.get(url, headers=headers, allow_redirects=False) as resp:
                    body, oversize = await self._read(resp)
                    return RawResponse(resp.status, dict(resp.headers), body, oversize)
        except aiohttp.ConnectionTimeoutError:
            raise TransportTimeout(f"no connection within {self._connect_s:g}s") from None
        except aiohttp.SocketTimeoutError:
            raise TransportTimeout(f"read stalled for {self._read_s:g}s") from None
        except TimeoutError:
            raise TransportTimeout(f"no answer within {timeout_s:g}s") from None
        except _Dropped as exc:
            raise TransportFailure(str(exc)) from None
        except (aiohttp.ClientError, OSError) as exc:
            # The class name is enough to diagnose; the text could carry headers.
            raise TransportFailure(type(exc).__name__) from None

    async def _read(self, resp: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        """The body and False, or b"" and True once it is known to be over the limit."""
        limit = self._max_body
        if resp.content_length is not None and resp.content_length > limit:
            return b"", True
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = await resp.content.read(limit + 1 - size)
            if not chunk:
                return b"".join(chunks), False
            chunks.append(chunk)
            size += len(chunk)
        return b"", True

    async def close(self) -> None:
        """Close the session and its connections."""
        await self._session.close()
