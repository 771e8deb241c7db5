"""The baseline for the throughput benchmark: a bare aiohttp handler returning fixed bytes.

It serves ``GET /v1/content/{containerId}/progress`` with exactly the body and headers the proxy
sent for that container (captured by the benchmark and passed in a JSON file), a 304 when
``If-None-Match`` matches, on the same event loop (uvloop) and runner settings as the proxy.
``GET /v1/content/{containerId}/progress/stream`` is the bare SSE handler the stream memory
benchmark compares with: the proxy's stream headers, the body as one event, then idle.

    python -m bench.bare_server --port 8181 --responses responses.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from proxy.server import install_fast_loop
from proxy.web.protocol import PARSER_MAX_FIELD, PARSER_MAX_LINE


@dataclass(frozen=True)
class Canned:
    """One container's response as the proxy sent it."""

    body: bytes
    headers: dict[str, str]

    @property
    def etag(self) -> str:
        """The ETag header (what ``If-None-Match`` is compared with)."""
        return self.headers.get("ETag", "")


def load(path: Path) -> dict[str, Canned]:
    """Container id → canned response, from ``{"id": {"body_b64": ..., "headers": {...}}}``."""
    raw = json.loads(path.read_text())
    return {
        cid: Canned(base64.b64decode(item["body_b64"]), dict(item["headers"]))
        for cid, item in raw.items()
    }


def make_app(responses: dict[str, Canned]) -> web.Application:
    """One route, no middleware: the least work aiohttp can do for this answer."""

    async def progress(request: web.Request) -> web.Response:
        canned = responses.get(request.match_info["containerId"])
        if canned is None:
            raise web.HTTPNotFound()
        headers = {k: v for k, v in canned.headers.items() if k != "Content-Type"}
        if request.headers.get("If-None-Match") == canned.etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=canned.body, content_type="application/json", headers=headers)

    idle = asyncio.Event()  # never set: every stream waits on it

    async def stream(request: web.Request) -> web.StreamResponse:
        canned = responses.get(request.match_info["containerId"])
        if canned is None:
            raise web.HTTPNotFound()
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        await response.write(b"event: progress\nid: 1\ndata: " + canned.body + b"\n\n")
        await idle.wait()
        return response

    app = web.Application()
    app.router.add_get("/v1/content/{containerId}/progress", progress)
    app.router.add_get("/v1/content/{containerId}/progress/stream", stream)
    return app


async def serve(port: int, responses: dict[str, Canned]) -> None:
    """Serve until SIGTERM/SIGINT with the proxy's runner settings."""
    runner = web.AppRunner(
        make_app(responses),
        access_log=None,
        handle_signals=False,
        handler_cancellation=True,
        max_line_size=PARSER_MAX_LINE,
        max_field_size=PARSER_MAX_FIELD,
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=2048, reuse_address=True)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"bare server listening on http://127.0.0.1:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--responses", type=Path, required=True, help="JSON file of responses")
    args = parser.parse_args()
    install_fast_loop()
    asyncio.run(serve(args.port, load(args.responses)))


if __name__ == "__main__":
    main()
