"""Upstream is untrusted input (invariants 8, 9, 12): hangs, stalls, drips and bad bodies.

Each test injects simulator faults for some containers while others stay healthy, keeps
recording clients on two replicas through a baseline, the fault and a recovery phase, and checks
the history: healthy containers keep their cadence, the 1 s floor holds for everyone, clients
keep the last good snapshot (marked stale, never a 5xx), nothing invalid is ever served, and
every client has news soon after the fault ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from proxy.simulator.state import DEFAULT_KEY
from tests.chaos.clients import ClientGroup, Recording
from tests.chaos.conftest import CHAOS_ENV, ChaosEnv, start_load, trouble, wait_for, warm
from tests.chaos.history import Cadence, Fault, Report, Window, check_history

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

STAGES = [("analyzing", 5.0), ("generating_visuals", 50.0), ("finalizing", 40.0)]
STALE_AFTER_S = float(CHAOS_ENV["PROXY_STALE_AFTER_S"])
UPSTREAM_TIMEOUT_S = float(CHAOS_ENV["PROXY_UPSTREAM_TIMEOUT_S"])
BACKOFF_MAX_S = float(CHAOS_ENV["PROXY_BACKOFF_MAX_S"])
FRESH_WITHIN_S = 5.0
MAX_BODY_BYTES = 64 * 1024
KEY_SECRET_PART = DEFAULT_KEY.rsplit("_", 1)[1]  # the 43 characters after the key id


def hung_id(i: int) -> str:
    return f"cnt_dead0000-0000-4000-8000-{i:012x}"


def healthy_id(i: int) -> str:
    return f"cnt_beef0000-0000-4000-8000-{i:012x}"


@dataclass
class Phases:
    loaded_at: float
    fault_start: float
    fault_wall: float
    fault_end: float
    stopped_at: float


async def run_phases(
    chaos: ChaosEnv,
    group: ClientGroup,
    rules: Sequence[dict[str, Any]],
    *,
    baseline_s: float,
    fault_s: float,
    after_s: float,
) -> Phases:
    """Baseline, faults on for ``fault_s``, faults cleared, recovery; then stop the clients.

    The phases are observation windows, not waits: the history checker judges what the
    clients and the upstream saw in each (cadence, staleness, freshness after the fault).
    """
    loaded_at = time.monotonic()
    await asyncio.sleep(baseline_s)
    fault_start, fault_wall = time.monotonic(), time.time()
    for rule in rules:
        await asyncio.to_thread(chaos.fault, **rule)
    await asyncio.sleep(fault_s)
    await asyncio.to_thread(chaos.sim.clear_faults)
    fault_end = time.monotonic()
    await asyncio.sleep(after_s)
    stopped_at = time.monotonic()
    await group.stop()
    return Phases(loaded_at, fault_start, fault_wall, fault_end, stopped_at)


def stale_problems(
    rec: Recording, faulted: Sequence[str], p: Phases, labels: dict[str, str]
) -> list[str]:
    """Polls of faulted containers late in the fault must say the snapshot is stale."""
    since = p.fault_start + STALE_AFTER_S + UPSTREAM_TIMEOUT_S + 1.0
    out = []
    for cid in faulted:
        late = [
            o
            for o in rec.of(resource=cid)
            if o.mode == "poll" and o.status in (200, 304) and since <= o.t <= p.fault_end
        ]
        fresh = [o for o in late if "stale" not in o.headers.get("Cache-Status", "")]
        if not late or fresh:
            example = fresh[0].headers.get("Cache-Status") if fresh else None
            out.append(
                f"{cid}[{labels.get(cid, '')}]: {len(fresh)} of {len(late)} polls late in the "
                f"fault not marked stale (Cache-Status {example!r})"
            )
    return out


def oversize_problems(rec: Recording) -> list[str]:
    big = [o for o in rec.observations if len(o.raw) > MAX_BODY_BYTES]
    return [
        f"{o.client} {o.resource}: a {len(o.raw)}-byte answer reached a client" for o in big[:5]
    ]


def verdict(report: Report, chaos: ChaosEnv, problems: Sequence[str] = ()) -> str:
    text = "\n".join(p for p in (report.summary(), *problems, trouble(chaos.proxies)) if p)
    print(text)  # shown with -s, and by pytest when the test fails
    return text


async def _warm_batch(
    session: aiohttp.ClientSession, urls: Sequence[str], ids: Sequence[str], size: int = 40
) -> None:
    """Cold-fetch many containers through the batch endpoint, ``size`` at a time."""
    for n, start in enumerate(range(0, len(ids), size)):
        chunk = ids[start : start + size]
        url = f"{urls[n % len(urls)]}/v1/content/progress?ids={','.join(chunk)}"
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as resp:
            assert resp.status == 200, await resp.text()
            items = (await resp.json())["items"]
        missing = [i for i in items if "error" in i]
        assert not missing, f"cold fetches failed before the fault: {missing[:3]}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["hang", "stall"])
async def test_many_hung_resources_do_not_starve_healthy_ones(chaos: ChaosEnv, kind: str) -> None:
    """160 containers whose upstream requests hang (or stall: read, never answered) beside 8
    healthy ones on 2 replicas: the healthy ones keep the 2 s cadence, nobody's requests come
    less than 1 s apart, the hung ones are served stale (never a 5xx) and catch up once the
    upstream answers again."""
    chaos.start_redis()
    a, b = chaos.start_proxies(2)
    hung = [chaos.container(STAGES, container_id=hung_id(i)) for i in range(160)]
    healthy = [chaos.container(STAGES, container_id=healthy_id(i)) for i in range(8)]
    async with ClientGroup() as group:
        await _warm_batch(group.session, [a.url, b.url], hung)
        await warm(group.session, [a, b], healthy)
        start_load(group, [a, b], healthy, pollers_per_container=3, multiplexed=False, long_polls=2)
        for i in range(4):  # every hung container stays watched through a multiplexed stream
            group.sse(f"hung-multi-{i}", (a, b)[i % 2].url, hung[i * 40 : (i + 1) * 40])
        for i, cid in enumerate(hung[:4]):
            group.poller(f"hung-poll-{i}", (a, b)[i % 2].url, cid)
        p = await run_phases(
            chaos,
            group,
            [{"kind": kind, "path_contains": "cnt_dead"}],
            baseline_s=3.0,
            fault_s=11.0,
            # Longer than the freshness bound below: a client is only judged if it watched
            # that long after the fault ended.
            after_s=FRESH_WITHIN_S + 3.0 + 2.0,
        )
    rec = group.recording
    labels = {cid: kind for cid in hung}
    report = check_history(
        rec.observations,
        await chaos.collect(group.recording),
        timelines=chaos.timelines,
        clients=rec.clients.values(),
        cadence_windows=[
            Window(p.loaded_at + 1.0, p.stopped_at, frozenset(healthy), f"healthy beside {kind}")
        ],
        faults=[
            Fault(
                p.fault_start,
                p.fault_end,
                frozenset(hung),
                label=f"{kind} cleared",
                start_wall=p.fault_wall,
            )
        ],
        fresh_within_s=FRESH_WITHIN_S + 3.0,  # 160 resources catch up, queued behind the floor
        labels=labels,
        origin=p.fault_start,
    )
    problems = stale_problems(rec, hung[:4], p, labels)
    text = verdict(report, chaos, problems)
    assert report.ok and not problems, text


@pytest.mark.timeout(90)
async def test_a_dripping_upstream_is_cut_off_by_the_request_timeout(chaos: ChaosEnv) -> None:
    """An upstream that sends headers at once and then one byte every 200 ms (a 35 s body):
    every poll gives up within the upstream timeout and tries again (no poll is held for the
    whole drip), healthy containers keep their cadence, clients get stale data and no 5xx,
    and fresh data after the drip stops."""
    chaos.start_redis()
    a, b = chaos.start_proxies(2)
    dripping = [chaos.container(STAGES) for _ in range(3)]
    healthy = [chaos.container(STAGES) for _ in range(3)]
    async with ClientGroup() as group:
        await warm(group.session, [a, b], dripping + healthy)
        start_load(group, [a, b], dripping + healthy, pollers_per_container=3, long_polls=3)
        p = await run_phases(
            chaos,
            group,
            [{"kind": "drip", "path_contains": cid, "latency_ms": 200} for cid in dripping],
            baseline_s=3.0,
            fault_s=12.0,
            after_s=6.0,
        )
    rec = group.recording
    labels = {cid: "drip" for cid in dripping}
    upstream = await chaos.collect(group.recording)
    report = check_history(
        rec.observations,
        upstream,
        timelines=chaos.timelines,
        clients=rec.clients.values(),
        cadence_windows=[
            Window(p.loaded_at + 1.0, p.stopped_at, frozenset(healthy), "healthy beside drips")
        ],
        faults=[Fault(p.fault_start, p.fault_end, frozenset(dripping), "drip", p.fault_wall)],
        fresh_within_s=FRESH_WITHIN_S,
        labels=labels,
        origin=p.fault_start,
    )
    # A drip must not hold a poll longer than the upstream timeout: within the drip the gaps
    # between attempts are at most the timeout plus the error backoff.
    bounded = check_history(
        [],
        upstream,
        timelines=chaos.timelines,
        cadence=Cadence(default_s=UPSTREAM_TIMEOUT_S + BACKOFF_MAX_S),
        cadence_windows=[Window(p.fault_start + 1.0, p.fault_end, frozenset(dripping), "a drip")],
        labels=labels,
        origin=p.fault_start,
    )
    problems = stale_problems(rec, dripping, p, labels)
    if not bounded.ok:
        problems.append("polls held by the drip:\n" + bounded.summary())
    text = verdict(report, chaos, problems)
    assert report.ok and not problems, text


BAD_BODIES = {
    "truncated": {"kind": "truncated"},
    "garbage": {"kind": "garbage"},
    "missing_fields": {"kind": "missing_fields"},
    "oversize": {"kind": "oversize", "size_bytes": 100_000},
    "wrong_id": {"kind": "wrong_id"},
}


@pytest.mark.timeout(90)
async def test_invalid_upstream_bodies_are_never_served_or_cached(chaos: ChaosEnv) -> None:
    """One container per kind of bad 200 (cut in half, HTML, fields missing, 100 KB, another
    container's terminal body), beside healthy ones: no client ever sees an invalid, foreign or
    oversized body; the last good snapshot is served stale, never a 5xx; a foreign terminal
    body does not end polling, so every client has news soon after the fault ends."""
    chaos.start_redis()
    a, b = chaos.start_proxies(2)
    faulted = {name: chaos.container(STAGES) for name in BAD_BODIES}
    healthy = [chaos.container(STAGES) for _ in range(2)]
    everything = [*faulted.values(), *healthy]
    async with ClientGroup() as group:
        await warm(group.session, [a, b], everything)
        start_load(group, [a, b], everything, pollers_per_container=3, long_polls=4)
        p = await run_phases(
            chaos,
            group,
            [{**rule, "path_contains": faulted[name]} for name, rule in BAD_BODIES.items()],
            baseline_s=3.0,
            fault_s=10.0,
            after_s=7.0,
        )
    rec = group.recording
    labels = {cid: name for name, cid in faulted.items()}
    bad = frozenset(faulted.values())
    report = check_history(
        rec.observations,
        await chaos.collect(group.recording),
        timelines=chaos.timelines,
        clients=rec.clients.values(),
        cadence_windows=[
            Window(p.loaded_at + 1.0, p.stopped_at, frozenset(healthy), "healthy beside bad"),
            Window(p.fault_end + 3.0, p.stopped_at, bad, "after the bad bodies"),
        ],
        faults=[Fault(p.fault_start, p.fault_end, bad, "bad bodies", p.fault_wall)],
        fresh_within_s=FRESH_WITHIN_S,
        labels=labels,
        origin=p.fault_start,
    )
    problems = stale_problems(rec, list(faulted.values()), p, labels) + oversize_problems(rec)
    text = verdict(report, chaos, problems)
    assert report.ok and not problems, text


@pytest.mark.timeout(90)
async def test_a_reflected_api_key_never_reaches_a_client(chaos: ChaosEnv) -> None:
    """The upstream echoes the request's headers (Authorization too) into every body, and into
    a failed container's lastError: the key reaches no client, in poll bodies, stream events
    (the final event carries lastError) or headers, and no log line."""
    chaos.start_redis()
    a, b = chaos.start_proxies(2)
    running = [chaos.container(STAGES) for _ in range(2)]
    failing = [
        chaos.container([("analyzing", 3.0), ("generating_visuals", 5.0)], ending="failed")
        for _ in range(2)
    ]
    everything = [*running, *failing]
    for cid in everything:
        chaos.fault(kind="reflect", path_contains=cid)
    async with ClientGroup() as group:
        start_load(group, [a, b], everything, pollers_per_container=3, long_polls=4)

        async def finals_streamed() -> bool:
            """Both failing containers have ended and a stream sent each one's final event."""
            return all(
                any(
                    o.mode == "sse"
                    and isinstance(o.body, dict)
                    and o.body.get("status") == "failed"
                    for o in group.recording.of(resource=cid)
                )
                for cid in failing
            )

        await wait_for(finals_streamed, 30.0)  # they end at 4.5 s; judged below if they did not
        await group.stop()
    rec = group.recording
    labels = {cid: "reflect, running" for cid in running} | {
        cid: "reflect, fails" for cid in failing
    }
    report = check_history(
        rec.observations,
        await chaos.collect(group.recording),
        timelines=chaos.timelines,
        secrets=[DEFAULT_KEY, KEY_SECRET_PART],
        labels=labels,
    )
    problems = []
    finals = [
        o
        for o in rec.observations
        if o.mode == "sse"
        and o.resource in failing
        and isinstance(o.body, dict)
        and o.body.get("status") == "failed"
    ]
    if not finals:
        problems.append("no stream saw a failed container's final event (the test saw nothing)")
    for proc in chaos.proxies:
        proc.stop()
        if KEY_SECRET_PART in proc.all_output():
            problems.append(f"the API key is in {proc.name}'s output")
    text = verdict(report, chaos, problems)
    assert report.ok and not problems, text


@pytest.mark.timeout(90)
async def test_a_429_cools_every_replica_down_and_clients_notice_nothing(chaos: ChaosEnv) -> None:
    """One upstream 429 with Retry-After: 4 while two replicas poll six containers: nobody
    calls the upstream until the cooldown is over, every client keeps its snapshot (stale,
    never a 5xx) and has news within 5 s of the cooldown's end, and the cadence resumes."""
    chaos.start_redis()
    a, b = chaos.start_proxies(2)
    cids = [chaos.container(STAGES) for _ in range(6)]
    cooldown_s = 4
    async with ClientGroup() as group:
        await warm(group.session, [a, b], cids)
        start_load(group, [a, b], cids, pollers_per_container=3)
        loaded_at = time.monotonic()
        await asyncio.sleep(3.0)  # the baseline (a cadence window)
        armed_at = time.monotonic()
        await asyncio.to_thread(chaos.fault, kind="rate_limit", retry_after_s=cooldown_s, count=1)

        async def first_429() -> float | None:
            return min((u.t for u in await chaos.aupstream() if u.status == 429), default=None)

        async def limited() -> bool:
            return await first_429() is not None

        # Once the 429 has come, watch the cooldown, the freshness limit after it and a
        # stretch of cadence: a window anchored to the 429 (told below if it never came).
        if await wait_for(limited, 15.0):
            hit_t = await first_429()
            assert hit_t is not None
            await asyncio.sleep(
                max(0.0, hit_t + cooldown_s + FRESH_WITHIN_S + 3.0 - time.monotonic())
            )
        stopped_at = time.monotonic()
        await group.stop()
    upstream = await chaos.collect(group.recording)
    limited = [u for u in upstream if u.status == 429]
    assert len(limited) == 1, f"the fault should have answered exactly one 429: {limited}"
    hit = limited[0]
    over = hit.t + cooldown_s
    report = check_history(
        group.recording.observations,
        upstream,
        timelines=chaos.timelines,
        clients=group.recording.clients.values(),
        # The simulator's clock and Redis's differ by the request's travel time: 0.1 s each side.
        outages=[Window(hit.t + 0.1, over - 0.1, None, "the 429 cooldown")],
        faults=[Fault(hit.t, over, None, "429 cooldown", time.time() - (time.monotonic() - hit.t))],
        fresh_within_s=FRESH_WITHIN_S,
        cadence_windows=[
            Window(loaded_at + 1.0, armed_at, frozenset(cids), "the baseline"),
            Window(over + 3.0, stopped_at, frozenset(cids), "after the cooldown"),
        ],
        origin=hit.t,
    )
    text = verdict(report, chaos)
    assert report.ok, text
