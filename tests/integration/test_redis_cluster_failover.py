"""Redis Cluster failover: a master is SIGKILLed and its replica promoted, under load.

Real processes: six cluster-enabled redis-servers (three masters, one replica each, node timeout
1 s), the simulator and two proxy replicas with ``REDIS_URL=redis+cluster://…``. Pollers,
long-pollers and SSE clients (``tests/chaos/clients.py``) watch containers whose keys live on
every master; then the master owning the ``{lp-global}`` slot (the budget and cooldown, which
every claim passes through) or another one is killed. The cluster promotes its replica; the
history checker (``tests/chaos/history.py``) then judges what every client saw against the
simulator's request log: polling resumes within a few seconds of the promotion, nobody sees
progress go backwards, no 5xx once a client has data, and the 1 s floor holds per container.
Cold requests made while the master is down get a 200 or the documented
``503 UNAVAILABLE`` with ``Retry-After``, nothing else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from proxy.store import keys
from proxy.testing.processes import ManagedProcess, restart_redis
from tests.chaos.clients import ClientGroup
from tests.chaos.conftest import ChaosEnv, start_load, trouble, warm
from tests.chaos.history import Fault, Window, check_history
from tests.conftest import Sim
from tests.redis_topologies import Cluster, start_cluster

pytestmark = [pytest.mark.integration]

NODE_TIMEOUT_MS = 1000
# Nothing finishes during a test; a stage change a few seconds in; under 30 s in one stage
# before the end, so the 2 s cadence applies throughout.
STAGES = [("analyzing", 5.0), ("generating_visuals", 40.0), ("finalizing", 40.0)]
PER_MASTER = 2  # watched containers whose slot each master serves
BASELINE_S = 5.0
AFTER_S = 10.0
FRESH_WITHIN_S = 5.0  # every client has news this soon after the promotion
RECOVERY_S = 4.0  # the cadence is checked again from this long after the promotion
FAILOVER_WITHIN_S = 10.0  # node timeout 1 s: the replica is promoted in about 2 s
# When cold requests are made, after the kill: at once (the master only unreachable), and
# after the node timeout (the master marked failed, its replica not yet promoted).
COLD_ROUNDS_S = (0.0, NODE_TIMEOUT_MS / 1000 + 0.3)


class ClusterChaos(ChaosEnv):
    """The chaos environment (clients, replicas, timelines, cleanup) on a Redis Cluster."""

    def __init__(self, sim: Sim, cluster: Cluster) -> None:
        super().__init__(sim)
        self.cluster = cluster

    def redis_url(self) -> str:
        return self.cluster.url


@pytest.fixture
def failover_cluster() -> Iterator[Cluster]:
    """A fresh 3-master cluster with one replica per master (each test kills a node)."""
    topology = start_cluster(3, replicas=1, node_timeout_ms=NODE_TIMEOUT_MS)
    yield topology
    topology.stop()


@pytest.fixture
def env(
    sim: Sim, failover_cluster: Cluster, request: pytest.FixtureRequest
) -> Iterator[ClusterChaos]:
    chaos = ClusterChaos(sim, failover_cluster)
    chaos.name = request.node.name
    try:
        yield chaos
    finally:
        chaos.cleanup()


def _slot_of(cid: str) -> int:
    return keys.key_slot(keys.channel(f"progress:-:{cid}"))


def _by_master(env: ClusterChaos, per_master: int) -> dict[int, list[str]]:
    """``per_master`` new running containers for each master, keyed by the master's port."""
    masters = {n.port for n in env.cluster.masters()}
    out: dict[int, list[str]] = {port: [] for port in masters}
    for _ in range(per_master * len(masters) * 8):
        cid = env.container(STAGES)
        port = env.cluster.master_port_of_slot(_slot_of(cid))
        if port in out and len(out[port]) < per_master:
            out[port].append(cid)
        if all(len(ids) == per_master for ids in out.values()):
            return out
    raise AssertionError(f"could not place {per_master} containers on every master: {out}")


async def _cold(session: aiohttp.ClientSession, url: str, delay_s: float = 0.0) -> dict[str, Any]:
    """One GET (after ``delay_s``): its status, how long it took, the start of its body."""
    await asyncio.sleep(delay_s)
    started = time.monotonic()
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=15)) as resp:
            raw = await resp.read()
            return {
                "status": resp.status,
                "sent_s": started,
                "elapsed_s": time.monotonic() - started,
                "body": raw[:300].decode("utf-8", "replace"),
                "retry_after": resp.headers.get("Retry-After"),
            }
    except (aiohttp.ClientError, TimeoutError) as exc:
        return {"status": 0, "sent_s": started, "elapsed_s": 0.0, "body": repr(exc)}


def _cold_problems(answers: list[dict[str, Any]]) -> list[str]:
    """Anything but a 200 or a 503 UNAVAILABLE with Retry-After."""
    bad = []
    for a in answers:
        if a["status"] == 200:
            continue
        documented = (
            a["status"] == 503 and '"UNAVAILABLE"' in a["body"] and a.get("retry_after") is not None
        )
        if not documented:
            bad.append(f"{a['status']} after {a['elapsed_s']:.2f}s: {a['body'][:200]}")
    return bad


async def _get_until_200(
    session: aiohttp.ClientSession, url: str, timeout_s: float
) -> tuple[int, float]:
    """GET until a 200; (last status, seconds it took)."""
    started = time.monotonic()
    status = 0
    while time.monotonic() - started < timeout_s:
        status = int((await _cold(session, url))["status"])
        if status == 200:
            break
        await asyncio.sleep(0.2)
    return status, time.monotonic() - started


def _restart_as_replica(cluster: Cluster, port: int, timeout_s: float = 20.0) -> float:
    """Start the killed node on ``port`` again; when it is a synced replica and every node says
    ``cluster_state:ok``, return ``time.monotonic()``."""
    index = next(i for i, n in enumerate(cluster.nodes) if n.port == port)
    cluster.nodes[index] = restart_redis(cluster.nodes[index])
    deadline = time.monotonic() + timeout_s
    while cluster.role(port) != "slave":
        if time.monotonic() > deadline:
            raise TimeoutError(f"the node on {port} did not rejoin as a replica")
        time.sleep(0.1)
    cluster.wait_replicas_synced(timeout_s)
    cluster.wait_ok(timeout_s)
    return time.monotonic()


def _victim(cluster: Cluster, which: str) -> int:
    """The port of the master to kill: the {lp-global} one, or another."""
    global_master = cluster.master_port_of_slot(keys.key_slot(keys.GLOBAL_TAG))
    assert global_master is not None
    if which == "lp-global":
        return global_master
    return next(n.port for n in cluster.masters() if n.port != global_master)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("which", ["lp-global", "resources-only"])
async def test_master_failover_under_load(env: ClusterChaos, which: str) -> None:
    """SIGKILL a master (the one serving {lp-global}, or one serving only resources) while two
    replicas serve pollers, long-pollers and streams; its replica is promoted, and later the
    old master comes back as a replica.

    Polling resumes within 5 s of the promotion for every container (on the killed master's
    slots and elsewhere), no client sees progress go backwards, no 5xx once a client has data,
    cold requests during the failover get 200 or 503 UNAVAILABLE, the 1 s floor holds for every
    container and the 2 s cadence resumes.
    """
    cluster = env.cluster
    placed = _by_master(env, PER_MASTER)
    cids = [cid for ids in placed.values() for cid in ids]
    victim_port = _victim(cluster, which)
    # Cold containers, one per master for each round, asked for only while the victim is down.
    cold = _by_master(env, len(COLD_ROUNDS_S))
    a, b = env.start_proxies(2)
    replicas: list[ManagedProcess] = [a, b]
    cold_answers: list[dict[str, Any]] = []
    async with ClientGroup() as group:
        await warm(group.session, replicas, cids, spread_s=2.0)
        start_load(group, replicas, cids, pollers_per_container=2, long_polls=2)
        loaded_at = time.monotonic()
        await asyncio.sleep(BASELINE_S)

        fault_start, fault_wall = time.monotonic(), time.time()
        cluster.node(victim_port).kill()
        # Cold requests over both replicas while the cluster notices and promotes the replica.
        cold_tasks = [
            asyncio.create_task(
                _cold(
                    group.session,
                    f"{replicas[(i + r) % 2].url}/v1/content/{ids[r]}/progress",
                    delay_s=delay_s,
                )
            )
            for r, delay_s in enumerate(COLD_ROUNDS_S)
            for i, ids in enumerate(cold.values())
        ]
        promoted_at = await asyncio.to_thread(
            cluster.wait_for_failover,
            min(_slot_of(cid) for cid in placed[victim_port]),
            victim_port,
            FAILOVER_WITHIN_S,
        )
        cold_answers = list(await asyncio.gather(*cold_tasks))
        # Every cold container is served soon after the promotion, from either replica.
        after_cold = [
            await _get_until_200(
                group.session, f"{replicas[(i + 1) % 2].url}/v1/content/{cid}/progress", 10.0
            )
            for ids in cold.values()
            for i, cid in enumerate(ids)
        ]
        await asyncio.sleep(AFTER_S / 2)
        # The old master comes back (same node id, from its nodes.conf) as a replica of the
        # promoted one: clients must not notice.
        rejoined_at = await asyncio.to_thread(_restart_as_replica, cluster, victim_port)
        await asyncio.sleep(AFTER_S / 2)
        stopped_at = time.monotonic()
        await group.stop()

    report = check_history(
        group.recording.observations,
        await env.collect(group.recording),
        timelines=env.timelines,
        clients=group.recording.clients.values(),
        faults=[Fault(fault_start, promoted_at, start_wall=fault_wall, label=f"kill {which}")],
        fresh_within_s=FRESH_WITHIN_S,
        cadence_windows=[
            Window(loaded_at + 1.0, fault_start, frozenset(cids), "the baseline"),
            Window(promoted_at + RECOVERY_S, stopped_at, frozenset(cids), "after the failover"),
        ],
        origin=fault_start,
    )
    failover_s = promoted_at - fault_start
    text = "\n".join(
        [
            report.summary(),
            f"promoted {failover_s:.2f}s after the kill; cold answers (sent at, status, took): "
            + ", ".join(
                f"+{c['sent_s'] - fault_start:.1f}s {c['status']} {c['elapsed_s']:.2f}s"
                for c in cold_answers
            ),
            f"cold containers after the promotion: {after_cold}",
            f"the old master rejoined as a replica {rejoined_at - fault_start:.2f}s after the kill",
            trouble(replicas),
        ]
    )
    print(text)  # shown with -s, and by pytest when the test fails
    assert failover_s < FAILOVER_WITHIN_S, text
    assert report.ok, text
    assert not _cold_problems(cold_answers), (_cold_problems(cold_answers), text)
    assert all(status == 200 for status, _ in after_cold), text
    assert all(took <= FRESH_WITHIN_S for _, took in after_cold), text
    for proc in replicas:
        output = proc.all_output()
        at = output.find("Traceback")
        assert at < 0, f"{proc.name}: {output[max(0, at - 500) : at + 4000]}"
