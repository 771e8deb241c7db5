"""``serve --workers N``: one port, N supervised replicas, one metrics view of the group."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ProxyFactory, Sim
from tests.integration.helpers import poll_until_terminal, wait_until

pytestmark = [pytest.mark.integration]


def children(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def all_gone(pids: set[int]) -> bool:
    """No process of ``pids`` exists any more."""
    return not any(Path(f"/proc/{pid}").exists() for pid in pids)


def upstream_total(text: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "layers_proxy_upstream_requests_total"
    )


@pytest.mark.timeout(90)
async def test_two_workers_share_a_port_restart_and_stop(sim: Sim, proxies: ProxyFactory) -> None:
    """Both workers answer on one port; a killed worker is back within 5 s; /metrics from any
    worker counts the whole group's upstream requests; SIGTERM stops everything within 10 s."""
    group = proxies(PROXY_WORKERS="2")
    assert group.proc is not None
    parent = group.proc.pid
    assert await wait_until(lambda: len(children(parent)) == 2, 10)
    group.wait_for("proxy listening on", 10)
    cid, _ = sim.container([["generating_visuals", 4.0]])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        seen = await poll_until_terminal(
            s, f"{group.url}/v1/content/{cid}/progress", every_s=0.2, deadline_s=25
        )
        assert seen.final is not None and set(seen.statuses) <= {200, 304}
        logged = len(sim.requests(cid))
        # A scrape of either worker (new connections land on both) reports the group, once
        # the siblings' files caught up (they are written every second).
        deadline = time.monotonic() + 8
        while True:
            totals = set()
            for _ in range(8):
                async with s.get(f"{group.url}/metrics") as resp:
                    totals.add(upstream_total(await resp.text()))
            if totals == {float(logged)} or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert totals == {float(logged)}, (totals, logged)

        victim = min(children(parent))
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        assert await wait_until(lambda: len(children(parent) - {victim}) == 2, 5), (
            "worker not restarted"
        )
        assert time.monotonic() - killed_at < 5

        async def served() -> bool:
            async with s.get(f"{group.url}/healthz") as resp:
                return resp.status == 200

        for _ in range(10):
            assert await served()
    workers = children(parent)
    group.proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    code = group.proc.wait(12)
    assert time.monotonic() - started < 10 and code == 0
    assert all_gone(workers)
