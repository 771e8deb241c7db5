"""``layers-proxy simulate``: run the Layers API simulator as a process.

Keys: each ``--key`` adds one full-access key. Without ``--key``, ``LAYERS_API_KEY`` from the
environment is used if set, else the built-in test key ``DEFAULT_KEY``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
from collections.abc import Mapping

import orjson

from proxy.simulator.app import running_simulator
from proxy.simulator.clock import ScaledClock
from proxy.simulator.demo import seed_demo
from proxy.simulator.faults import FAULT_KINDS
from proxy.simulator.requestlog import RequestRecord
from proxy.simulator.state import DEFAULT_KEY, DEFAULT_RATE_PER_MIN, KeySpec, SimulatorState

FAULTS_HELP = (
    "Faults are steered over HTTP while it runs: POST /_sim/faults "
    '{"kind": K, "path_contains": S, "count": N, "probability": P, "status": N, "code": S, '
    '"latency_ms": N, "retry_after_s": N, "size_bytes": N}, GET to list, DELETE to clear. '
    f"Kinds: {', '.join(FAULT_KINDS)} (each described in proxy/simulator/faults.py). "
    "Budget: POST /_sim/budget; request log: GET /_sim/requests."
)


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Add the ``simulate`` options to ``p``."""
    p.epilog = FAULTS_HELP
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8090, help="port to bind, 0 for any (default 8090)")
    p.add_argument(
        "--key",
        action="append",
        default=None,
        help="accept this API key (repeatable); default: $LAYERS_API_KEY, else the test key",
    )
    p.add_argument(
        "--rate-per-min",
        type=int,
        default=DEFAULT_RATE_PER_MIN,
        help="read-light budget per key per minute (default 120)",
    )
    p.add_argument("--demo", type=int, default=0, metavar="N", help="seed N containers in flight")
    p.add_argument("--seed", type=int, default=None, help="random seed for ids, demo and faults")
    p.add_argument("--speed", type=float, default=1.0, help="time multiplier (default 1.0)")
    p.add_argument(
        "--log-requests",
        action="store_true",
        help="print one JSON line per /v1 request to stdout (key id only, never the key)",
    )


def resolve_keys(cli_keys: list[str] | None, environ: Mapping[str, str]) -> list[str]:
    """Return the keys to accept: --key values, else $LAYERS_API_KEY, else DEFAULT_KEY."""
    if cli_keys:
        return cli_keys
    return [environ.get("LAYERS_API_KEY") or DEFAULT_KEY]


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; return the exit status."""
    if args.speed <= 0:
        print("--speed must be positive", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve(args))
    except OSError as exc:
        print(f"simulator failed to start: {exc}", file=sys.stderr)
        return 1


def _print_record(record: RequestRecord) -> None:
    sys.stdout.write(orjson.dumps(record.to_json()).decode() + "\n")
    sys.stdout.flush()


async def _serve(args: argparse.Namespace) -> int:
    clock = ScaledClock(args.speed)
    keys = resolve_keys(args.key, os.environ)
    state = SimulatorState(
        clock=clock.monotonic,
        wall_clock=clock.wall,
        keys={key: KeySpec() for key in keys},
        rate_per_min=args.rate_per_min,
        seed=args.seed,
    )
    if args.demo > 0:
        seeded = seed_demo(state, args.demo, random.Random(args.seed))
        # stderr, so stdout stays "the listening line, then request lines" for parents.
        for cid, job_id in seeded:
            print(f"demo container {cid} job {job_id}", file=sys.stderr)
    if args.log_requests:
        state.log.on_finish = _print_record
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with running_simulator(state, args.host, args.port) as sim:
            print(f"simulator listening on {sim.url}", flush=True)
            await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return 0
