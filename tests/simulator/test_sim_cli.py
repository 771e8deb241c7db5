"""The simulate command: option parsing, key resolution, and a real process end to end."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

import aiohttp

from proxy.simulator import DEFAULT_KEY
from proxy.simulator.cli import configure_parser, resolve_keys


def test_defaults() -> None:
    """The documented defaults: 127.0.0.1:8090, 120/min, no demo, speed 1, no request log."""
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args([])
    assert (args.host, args.port, args.rate_per_min, args.demo) == ("127.0.0.1", 8090, 120, 0)
    assert (args.speed, args.log_requests, args.key, args.seed) == (1.0, False, None, None)
    args = parser.parse_args(["--key", "a", "--key", "b", "--demo", "4", "--speed", "10"])
    assert (args.key, args.demo, args.speed) == (["a", "b"], 4, 10.0)


def test_key_resolution_order() -> None:
    """--key beats $LAYERS_API_KEY, which beats the built-in test key."""
    assert resolve_keys(["a"], {"LAYERS_API_KEY": "env"}) == ["a"]
    assert resolve_keys(None, {"LAYERS_API_KEY": "env"}) == ["env"]
    assert resolve_keys(None, {}) == [DEFAULT_KEY]
    assert len(DEFAULT_KEY.split("_")[2]) == 16
    assert len(DEFAULT_KEY.split("_", 3)[3]) == 43


async def test_process_serves_logs_and_stops_on_sigterm() -> None:
    """The process prints its URL, logs requests by key id only, and exits 0 on SIGTERM."""
    env = {k: v for k, v in os.environ.items() if k != "LAYERS_API_KEY"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy.simulator",
        "--port",
        "0",
        "--log-requests",
        "--demo",
        "3",
        "--seed",
        "5",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        assert line.startswith("simulator listening on http://127.0.0.1:")
        url = line.split()[-1]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/_sim/containers") as response:
                containers = (await response.json())["containers"]
            assert len(containers) == 3
            auth = {"Authorization": f"Bearer {DEFAULT_KEY}"}
            cid = containers[0]["containerId"]
            async with session.get(f"{url}/v1/content/{cid}/progress", headers=auth) as response:
                assert response.status == 200
        logged = (await asyncio.wait_for(proc.stdout.readline(), 5)).decode()
        record = json.loads(logged)
        assert (record["kind"], record["resource_id"], record["status"]) == ("progress", cid, 200)
        assert record["key_id"] == "simulatorkey0001"
        assert DEFAULT_KEY not in logged
    finally:
        proc.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(proc.wait(), 10)
    assert returncode == 0
