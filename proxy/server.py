"""Running the proxy as a process: the event loop, the listening socket, signals.

The listening socket serves ``proxy.web.protocol.EdgeProtocol`` (aiohttp's request handler with
header and keep-alive timeouts, enveloped parser errors and the cached-poll fast path).

Shutdown (SIGTERM or SIGINT): stop accepting, end every SSE stream with a short ``retry:`` hint
(within 1 s), let in-flight requests finish (up to ``shutdown_timeout_s``), then run the app's
cleanup, which hands the leases back. SIGHUP is logged and ignored: settings are read at start-up.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from typing import Any

import structlog
from aiohttp import web

from proxy.logs import scrubber, summarize_forever, summary
from proxy.settings import Settings
from proxy.streaming import SHUTDOWN_RETRY_MS
from proxy.tasks import spawn
from proxy.web import keys
from proxy.web.app import create_app
from proxy.web.fast_polls import FastPolls
from proxy.web.middlewares import install_edge
from proxy.web.protocol import PARSER_MAX_FIELD, PARSER_MAX_LINE, EdgeProtocol, HeadWatch
from proxy.workers import is_worker

log = structlog.get_logger("proxy.server")

# aiohttp's own idle timer, far out of the way: a day of silence.
_AIOHTTP_KEEPALIVE_S = 86400.0


async def serve(settings: Settings, *, ready_message: bool = True) -> None:
    """Serve until SIGINT/SIGTERM, then shut down gracefully (streams told, leases handed back)."""
    for tenant in settings.tenants:
        for _, secret in tenant.secrets:
            scrubber().add(secret.decode("utf-8", "replace"))
    app = create_app(settings)
    handler_options: dict[str, Any] = {
        "access_log": None,
        # HeadWatch keeps the keep-alive timeout (aiohttp cannot see fast-path requests).
        "keepalive_timeout": _AIOHTTP_KEEPALIVE_S,
        "max_line_size": PARSER_MAX_LINE,
        "max_field_size": PARSER_MAX_FIELD,
    }
    runner = web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=settings.shutdown_timeout_s,
        # Cancel a handler when its client leaves, so streams release interest at once.
        handler_cancellation=True,
        **handler_options,
    )
    await runner.setup()
    fast = FastPolls(app) if settings.fast_path and settings.access_log != "all" else None
    # What start-up made (modules, settings, routes, services) lives as long as the process:
    # out of the collector's generations, every full collection is shorter by all of it.
    gc.collect()
    gc.freeze()
    server = runner.server
    assert server is not None  # set by setup()
    watch = HeadWatch(settings.header_timeout_s, settings.keepalive_timeout_s)
    summary().interval_s = settings.log_summary_interval_s  # before the first request can log
    install_edge(runner, settings, on_request=watch.on_request, on_done=watch.on_done)
    loop = asyncio.get_running_loop()

    def make_protocol() -> EdgeProtocol:
        return EdgeProtocol(server, watch, fast, loop=loop, **handler_options)

    listener = await loop.create_server(
        make_protocol,
        settings.host,
        settings.port,
        backlog=2048,
        reuse_address=True,
        reuse_port=is_worker(),  # serve --workers: every worker listens on the same port
    )
    tasks = [
        spawn(watch.run(), "header-timeouts"),
        spawn(summarize_forever(settings.log_summary_interval_s), "log-summaries"),
    ]
    stop = asyncio.Event()
    received: list[str] = []

    def on_stop(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    def on_hup() -> None:
        log.info("sighup_ignored", detail="settings are read at start-up; restart to change them")

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_stop, sig)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    if ready_message:
        port = int(listener.sockets[0].getsockname()[1]) if listener.sockets else settings.port
        print(f"proxy listening on http://{settings.host}:{port}", flush=True)
        log.info("listening", host=settings.host, port=port)
    try:
        await stop.wait()
        log.info("shutting_down", signal=received[0] if received else None)
    finally:
        listener.close()  # no new connections; the open ones finish below
        streams = await app[keys.STREAM_HUB].close_all(
            min(settings.sse_retry_ms, SHUTDOWN_RETRY_MS)
        )
        # Idle keep-alive connections close, in-flight requests get shutdown_timeout_s, then
        # the app's cleanup runs (the scheduler hands its leases back).
        await runner.cleanup()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        summary().flush()
        log.info("shut_down", streams_closed=streams)


def install_fast_loop() -> None:
    """Use uvloop where it exists (a large share of the hot path is the event loop)."""
    if sys.platform != "win32":
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
