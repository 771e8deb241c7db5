"""``layers-proxy demo``: the simulator and the proxy in one process, with containers in flight.

One event loop serves a simulated Layers API on ``--sim-port`` (seeded with ``--containers`` runs,
refilled with a fresh batch about 10 s after the last one ends) and the proxy on ``--port``, plus
the demo page ``/demo`` and its JSON endpoints ``/demo/api/containers`` and ``/demo/api/stats``.
The page's project view shows the demo project (``GET /demo/api/project``, one fixed id per
process, seeded with one run of three containers); ``POST /demo/api/project/runs`` starts three
more containers in it.

Environment knob (for tests and a quick look): ``LAYERS_DEMO_SPEED=<float>`` runs the simulator's
clock that many times faster (default 1), so every timeline is that many times shorter.
``PROXY_ADMIN_TOKEN``, when set, is the demo proxy's admin token (the admin view at ``/admin``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from proxy.logs import configure_logging
from proxy.settings import SettingsError, load_settings
from proxy.simulator import DEFAULT_KEY, ScaledClock, SimulatorState, running_simulator, seed_demo
from proxy.simulator.demo import demo_script
from proxy.simulator.ids import new_uuid
from proxy.store.connect import answers_ping
from proxy.web import keys
from proxy.web.app import create_app
from proxy.web.middlewares import install_edge
from proxy.web.ops import public_stats
from proxy.web.protocol import PARSER_MAX_FIELD, PARSER_MAX_LINE
from proxy.web.static_routes import STATIC_DIR, add_static_routes

LOCAL_REDIS = "redis://127.0.0.1:6379/0"
# The pilot tier: a dozen containers at the 2 s cadence fit without stretching it.
DEMO_RATE_PER_MIN = 1200
REFILL_AFTER_S = 10.0
TERMINAL = ("completed", "failed", "canceled")
HOST = "127.0.0.1"
ADMIN_ENV = "PROXY_ADMIN_TOKEN"  # the admin view's token, taken from the environment when set
PROJECT_RUN_SIZE = 3  # containers per "Start a project run"
PROJECT_MAX_ACTIVE = 9  # a run is refused (429) while this many of the project's are in flight
PROJECT_POLL_S = 2  # the project's content list, polled upstream this often while watched


@dataclass
class Batch:
    """The containers the demo page shows: the latest seeded set."""

    state: SimulatorState
    size: int
    rng: random.Random = field(default_factory=random.Random)
    number: int = 0
    ids: list[tuple[str, str]] = field(default_factory=list)

    def seed(self) -> None:
        """Start a fresh set of containers in flight."""
        self.ids = seed_demo(self.state, self.size, self.rng)
        self.number += 1

    def ended(self) -> bool:
        """True when every container of the set has reached a terminal status."""
        return all(_ended(self.state, cid) for cid, _ in self.ids)


@dataclass
class DemoProject:
    """The demo's one project: runs of a few containers started from the page."""

    state: SimulatorState
    rng: random.Random = field(default_factory=random.Random)
    project_id: str = ""
    ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.project_id = self.project_id or "prj_" + new_uuid(self.rng)

    def active(self) -> int:
        """The project's containers still in flight."""
        return sum(1 for cid in self.ids if not _ended(self.state, cid))

    def run(self, size: int = PROJECT_RUN_SIZE) -> list[str]:
        """Start ``size`` varied containers in the project; return their ids."""
        started = []
        for _ in range(size):
            script = demo_script(len(self.ids), self.rng)
            cid, _job = self.state.add_container(script, project_id=self.project_id)
            self.ids.append(cid)
            started.append(cid)
        return started


async def choose_redis(explicit: str | None, source: str = "as asked") -> tuple[str, str]:
    """The Redis URL to use and why: the given one, a local Redis answering PING, or embedded."""
    if explicit:
        if explicit != "memory://" and not await answers_ping(explicit):
            raise SettingsError(f"no Redis answered PING at {explicit} ({source})")
        return explicit, source
    if await answers_ping(LOCAL_REDIS):
        return LOCAL_REDIS, "a local Redis answered PING"
    return "memory://", f"embedded in-process Redis: nothing answered PING at {LOCAL_REDIS}"


def demo_speed(environ: Mapping[str, str] = os.environ) -> float:
    """``LAYERS_DEMO_SPEED`` as a positive float (default 1)."""
    raw = environ.get("LAYERS_DEMO_SPEED", "") or "1"
    speed = float(raw)
    if not (math.isfinite(speed) and speed > 0):
        raise ValueError("LAYERS_DEMO_SPEED must be a positive number")
    return speed


def _json(data: Any) -> web.Response:
    return web.Response(
        body=orjson.dumps(data),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _count(data: Mapping[str, object], name: str) -> int:
    value = data.get(name, 0)
    return value if isinstance(value, int) else 0


def add_demo_routes(proxy: web.Application, batch: Batch, project: DemoProject) -> None:
    """The demo page and the JSON it refreshes from (demo only: they show simulator internals)."""

    async def page(_: web.Request) -> web.FileResponse:
        return web.FileResponse(
            STATIC_DIR / "demo.html", headers={"Content-Type": "text/html; charset=utf-8"}
        )

    async def containers(_: web.Request) -> web.Response:
        items = [
            {"containerId": cid, "jobId": jid, "kind": batch.state.containers[cid].run.script.kind}
            for cid, jid in batch.ids
        ]
        return _json({"batch": batch.number, "containers": items})

    async def stats(_: web.Request) -> web.Response:
        upstream = batch.state.stats()
        served = public_stats(proxy)
        deliveries = _count(served, "client_requests") + _count(served, "stream_events")
        return _json(
            {
                "batch": batch.number,
                "proxy": served,
                "upstream": {"requests": upstream["total"], **upstream},
                "deliveries": deliveries,
                "ratio": round(deliveries / upstream["total"], 2) if upstream["total"] else None,
                "rate_per_min": DEMO_RATE_PER_MIN,
                "active": sum(1 for cid, _ in batch.ids if not _ended(batch.state, cid)),
            }
        )

    def project_state() -> dict[str, Any]:
        return {
            "projectId": project.project_id,
            "containers": list(project.ids),
            "active": project.active(),
        }

    async def project_info(_: web.Request) -> web.Response:
        return _json(project_state())

    async def project_run(_: web.Request) -> web.Response:
        if project.active() >= PROJECT_MAX_ACTIVE:
            response = _json({"error": {"code": "TOO_MANY", "message": "Let a run finish first."}})
            response.set_status(429)
            return response
        started = project.run()
        response = _json({**project_state(), "started": started})
        response.set_status(201)
        return response

    proxy.router.add_get("/demo", page)
    proxy.router.add_get("/demo/api/project", project_info)
    proxy.router.add_post("/demo/api/project/runs", project_run)
    proxy.router.add_get("/demo/api/containers", containers)
    proxy.router.add_get("/demo/api/stats", stats)


def _ended(state: SimulatorState, cid: str) -> bool:
    body = state.progress(cid)
    return body is None or body["status"] in TERMINAL


async def keep_seeding(batch: Batch) -> None:
    """Once every container of the batch has ended, wait ``REFILL_AFTER_S`` and seed afresh."""
    while True:
        await asyncio.sleep(1.0)  # the simulator runs on time alone: nothing to wait on
        if batch.ended():
            await asyncio.sleep(REFILL_AFTER_S)
            batch.seed()


def _print_banner(
    base: str,
    sim_url: str,
    batch: Batch,
    redis: tuple[str, str],
    speed: float,
    admin: bool,
    project_id: str,
) -> None:
    url, why = redis
    cid = batch.ids[0][0]
    faster = f", clock x{speed:g}" if speed != 1 else ""
    lines = [
        "Layers Progress Proxy demo",
        f"  Redis      {url}  ({why})",
        f"  Simulator  {sim_url}  (fake Layers API, {batch.size} containers in flight, "
        f"{DEMO_RATE_PER_MIN} GETs/min budget{faster})",
        f"  Proxy      {base}  (auth off: PROXY_AUTH=none)",
        "",
        f"Open the demo page:  {base}/demo",
        f"Poll like a client:  curl -i {base}/v1/content/{cid}/progress",
        f"Stream it:           curl -N {base}/v1/content/{cid}/progress/stream",
        f"A whole project:     curl -s {base}/v1/projects/{project_id}/progress",
        f"Counters:            curl -s {base}/demo/api/stats",
        *([f"Admin view:          {base}/admin  (the token in {ADMIN_ENV})"] if admin else []),
        "  Watch deliveries (client_requests + stream_events, served by the proxy) grow",
        "  while upstream.requests (what the Layers API saw) stays at one poll per container",
        "  per cadence interval, however many tabs watch.",
        "",
        f"proxy listening on {base}  (Ctrl-C to stop)",
    ]
    print("\n".join(lines), flush=True)


async def _redis_for(args: argparse.Namespace) -> tuple[str, str]:
    if args.redis_url:
        return await choose_redis(args.redis_url, "from --redis-url")
    return await choose_redis(os.environ.get("REDIS_URL") or None, "from REDIS_URL")


def _proxy_runner(
    sim_url: str,
    redis_url: str,
    port: int,
    batch: Batch,
    project: DemoProject,
    admin_token: str = "",
) -> web.AppRunner:
    settings = load_settings(
        env={
            **({ADMIN_ENV: admin_token} if admin_token else {}),
            "LAYERS_API_URL": sim_url,
            "LAYERS_API_KEY": DEFAULT_KEY,
            "REDIS_URL": redis_url,
            "PROXY_AUTH": "none",
            "PROXY_HOST": HOST,
            "PROXY_PORT": str(port),
            "LAYERS_RATE_PER_MIN": str(DEMO_RATE_PER_MIN),
            "PROXY_LOG_LEVEL": "warning",
            "PROXY_PROJECT_POLL_S": str(PROJECT_POLL_S),  # a new run shows up within seconds
        }
    )
    proxy = create_app(settings)
    add_static_routes(proxy)
    add_demo_routes(proxy, batch, project)
    return web.AppRunner(
        proxy,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=2.0,
        handler_cancellation=True,  # as in serve: a tab that leaves releases its stream at once
        # Request-handler options go straight to AppRunner (given as ``handler_args=`` here,
        # aiohttp would drop every handler option, access_log=None included, per connection).
        max_line_size=PARSER_MAX_LINE,
        max_field_size=PARSER_MAX_FIELD,
    )


async def _run(args: argparse.Namespace, speed: float) -> int:
    try:
        redis = await _redis_for(args)
    except SettingsError as exc:
        print(f"layers-proxy demo: {exc}", file=sys.stderr)
        return 2
    clock = ScaledClock(speed)
    state = SimulatorState(
        clock=clock.monotonic, wall_clock=clock.wall, rate_per_min=DEMO_RATE_PER_MIN
    )
    batch = Batch(state, args.containers)
    batch.seed()
    project = DemoProject(state)
    project.run()  # the project exists upstream once it has a container
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with running_simulator(state, HOST, args.sim_port) as sim:
            admin_token = os.environ.get(ADMIN_ENV, "")
            runner = _proxy_runner(sim.url, redis[0], args.port, batch, project, admin_token)
            await runner.setup()
            install_edge(runner, runner.app[keys.SETTINGS])
            seeder = asyncio.create_task(keep_seeding(batch))
            try:
                await web.TCPSite(runner, HOST, args.port).start()
                base = f"http://{HOST}:{runner.addresses[0][1]}"
                _print_banner(
                    base,
                    sim.url,
                    batch,
                    redis,
                    speed,
                    admin=bool(admin_token),
                    project_id=project.project_id,
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(args.duration if args.duration > 0 else None):
                        await stop.wait()
            finally:
                seeder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await seeder
                await runner.cleanup()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    print("demo stopped", flush=True)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C, SIGTERM or ``--duration``; return the exit status."""
    configure_logging("warning")
    try:
        speed = demo_speed()
    except ValueError as exc:
        print(f"layers-proxy demo: {exc}", file=sys.stderr)
        return 2
    if args.containers < 1:
        print("layers-proxy demo: --containers must be at least 1", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, speed))
    except OSError as exc:
        print(f"layers-proxy demo: cannot start: {exc}", file=sys.stderr)
        return 1
