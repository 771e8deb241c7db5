"""The composition root: the simulator app factory and a context manager that serves it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from proxy.simulator.api import api_middleware
from proxy.simulator.context import STATE_KEY
from proxy.simulator.routes import add_routes
from proxy.simulator.state import DEFAULT_KEY, SimulatorState
from proxy.simulator.webhooks import TICK_S, WebhookSender

# Hangs are released on shutdown, so handlers finish quickly; this only bounds a stuck one.
SHUTDOWN_TIMEOUT_S = 2.0


def make_simulator_app(state: SimulatorState, *, webhook_tick_s: float = TICK_S) -> web.Application:
    """Build the simulator application around ``state``."""
    app = web.Application(middlewares=[api_middleware])
    app[STATE_KEY] = state
    add_routes(app)
    app.cleanup_ctx.append(_webhook_ctx(webhook_tick_s))
    app.on_shutdown.append(_release_hangs)
    return app


def _webhook_ctx(
    tick_s: float,
) -> Callable[[web.Application], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def webhook_sender(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            sender = WebhookSender(app[STATE_KEY], session, tick_s=tick_s)
            task = asyncio.create_task(sender.run())
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await sender.aclose()

    return webhook_sender


async def _release_hangs(app: web.Application) -> None:
    app[STATE_KEY].hang_epoch += 1


@dataclass(frozen=True)
class RunningSimulator:
    """A simulator serving on a real socket."""

    url: str
    host: str
    port: int
    state: SimulatorState
    app: web.Application

    def headers(self, key: str = DEFAULT_KEY) -> dict[str, str]:
        """Return Bearer auth headers for ``key`` (the default key unless given)."""
        return {"Authorization": f"Bearer {key}"}


@contextlib.asynccontextmanager
async def running_simulator(
    state: SimulatorState | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    webhook_tick_s: float = TICK_S,
) -> AsyncIterator[RunningSimulator]:
    """Serve a simulator on ``host:port`` (0 picks a free port) and stop it on exit."""
    state = state if state is not None else SimulatorState()
    app = make_simulator_app(state, webhook_tick_s=webhook_tick_s)
    # No access log: its default format would print query strings to stderr.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        url = f"http://{bound_host}:{bound_port}"
        yield RunningSimulator(url, bound_host, bound_port, state, app)
    finally:
        await runner.cleanup()
