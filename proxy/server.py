"""Running the proxy as a process: the event loop, the listening socket, signals."""

from __future__ import annotations

import asyncio
import signal
import sys

import structlog
from aiohttp import web

from proxy.settings import Settings
from proxy.web.app import create_app

log = structlog.get_logger("proxy.server")

# The HTTP parser's own limits sit well above ours, so oversized URLs and headers reach the edge
# middleware and get a 414/431 in the error envelope instead of the parser's bare 400.
PARSER_MAX_LINE = 65536
PARSER_MAX_FIELD = 65536


async def serve(settings: Settings, *, ready_message: bool = True) -> None:
    """Serve until SIGINT/SIGTERM, then shut down gracefully (leases handed back)."""
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=5.0,
        # Cancel a handler when its client leaves, so streams release interest at once.
        handler_cancellation=True,
        max_line_size=PARSER_MAX_LINE,
        max_field_size=PARSER_MAX_FIELD,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, backlog=2048, reuse_address=True)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready_message:
        port = _bound_port(site, settings.port)
        print(f"proxy listening on http://{settings.host}:{port}", flush=True)
        log.info("listening", host=settings.host, port=port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _bound_port(site: web.TCPSite, default: int) -> int:
    server = site._server
    sockets = getattr(server, "sockets", None)
    if sockets:
        return int(sockets[0].getsockname()[1])
    return default


def install_fast_loop() -> None:
    """Use uvloop where it exists (a large share of the hot path is the event loop)."""
    if sys.platform != "win32":
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
