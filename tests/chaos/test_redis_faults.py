"""Redis is a cache that can forget (invariant 11): restarts, flushes, pauses, a late Redis.

Each test runs its own redis-server on a fixed port (so it can be killed and started again
there), two real proxy replicas and the real simulator, drives recording clients through a
short baseline, the fault and a recovery phase, and hands everything to the history checker.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from tests.chaos.clients import ClientGroup
from tests.chaos.conftest import REDIS_TIMEOUT_S, ChaosEnv, start_load, trouble, wait_for, warm
from tests.chaos.history import Fault, Window, check_history, percentile
from tests.tenants.conftest import acme_token, tenants_toml

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

# Long enough that nothing finishes during a test, with a stage change a few seconds in, and
# short of 30 s in one stage so the 2 s cadence applies throughout.
STAGES = [("analyzing", 6.0), ("generating_visuals", 40.0), ("finalizing", 40.0)]
BASELINE_S = 5.0
# Enough versions before the fault that a version counter restarting at 1 lags for long.
FORGET_BASELINE_S = 8.0
AFTER_S = 10.0
FRESH_WITHIN_S = 5.0  # every client has news this soon after Redis is back
RECOVERY_S = 4.0  # cadence is checked again from this long after the fault


def _report_text(report: Any, chaos: ChaosEnv, extra: list[str] | None = None) -> str:
    parts = [report.summary(), *(extra or [])]
    print("\n".join(parts))  # shown with -s, and by pytest when the test fails
    parts.append(trouble(chaos.proxies))
    return "\n".join(p for p in parts if p)


@pytest.mark.timeout(100)
@pytest.mark.parametrize("how", ["restart_empty", "restart_with_data", "flushall"])
async def test_clients_keep_getting_news_when_redis_forgets_or_restarts(
    chaos: ChaosEnv, how: str
) -> None:
    """Redis SIGKILLed and restarted empty (or from its AOF), or FLUSHALLed, under load.

    Fresh data reaches every client within 5 s of Redis being back, progress never goes
    backwards for any client, the 1 s floor holds across the restart, no 5xx once a client has
    a snapshot, and the 2 s cadence resumes.
    """
    chaos.start_redis(persistent=how == "restart_with_data")
    a, b = chaos.start_proxies(2)
    # Ten containers whose polls are spread over the 2 s interval: whenever Redis forgets,
    # several were polled less than a second ago, and about half of the leases move to the
    # other replica, so every run shows whether the floor survives the loss.
    cids = [chaos.container(STAGES) for _ in range(10)]
    async with ClientGroup() as group:
        await warm(group.session, [a, b], cids, spread_s=2.0)
        start_load(group, [a, b], cids, pollers_per_container=3)
        loaded_at = time.monotonic()
        # Observation windows (the baseline, then the recovery): the history checker judges them.
        await asyncio.sleep(FORGET_BASELINE_S)
        fault_start, fault_wall = time.monotonic(), time.time()
        if how == "flushall":
            client = chaos.redis_client()
            await asyncio.to_thread(client.flushall)
            client.close()
        else:
            await asyncio.to_thread(chaos.kill_redis)
            await asyncio.to_thread(chaos.restart_redis)
        fault_end = time.monotonic()
        await asyncio.sleep(AFTER_S)
        stopped_at = time.monotonic()
        await group.stop()
    report = check_history(
        group.recording.observations,
        await chaos.collect(group.recording),
        timelines=chaos.timelines,
        clients=group.recording.clients.values(),
        faults=[Fault(fault_start, fault_end, start_wall=fault_wall, label=how)],
        fresh_within_s=FRESH_WITHIN_S,
        cadence_windows=[
            Window(loaded_at + 1.0, fault_start, frozenset(cids), "the baseline"),
            Window(fault_end + RECOVERY_S, stopped_at, frozenset(cids), f"after {how}"),
        ],
        origin=fault_start,
    )
    text = _report_text(report, chaos)
    assert report.ok, text


async def _cold_request(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> dict[str, Any]:
    started = time.monotonic()
    try:
        async with session.get(
            url, headers=headers, timeout=aiohttp.ClientTimeout(total=15)
        ) as resp:
            raw = await resp.read()
            return {
                "status": resp.status,
                "elapsed_s": time.monotonic() - started,
                "body": raw[:300].decode("utf-8", "replace"),
                "retry_after": resp.headers.get("Retry-After"),
            }
    except (aiohttp.ClientError, TimeoutError) as exc:
        return {"status": 0, "elapsed_s": time.monotonic() - started, "body": repr(exc)}


@pytest.mark.timeout(100)
@pytest.mark.parametrize("mode", ["open", "tokens"])
async def test_a_paused_redis_freezes_nothing_memory_can_answer(chaos: ChaosEnv, mode: str) -> None:
    """Redis SIGSTOPped for 8 s, then SIGCONT.

    Meanwhile hot polls, 304s, long-polls and open streams are answered from memory (no 5xx,
    poll p99 < 500 ms, streams stay open and heartbeat); a cold request for a container nobody
    asked for yet gets a 503 UNAVAILABLE with Retry-After within about the Redis timeout.
    After SIGCONT every client has news within 5 s and the cadence resumes.
    """
    chaos.start_redis()
    cids = [chaos.container(STAGES) for _ in range(4)]
    cold = [chaos.container(STAGES) for _ in range(2)]
    env: dict[str, str] = {}
    auth: dict[str, str] = {}
    if mode == "tokens":
        config = chaos.config(tenants_toml())
        env = {"PROXY_AUTH": "tokens", "PROXY_CONFIG": str(config)}
        auth = {"Authorization": f"Bearer {acme_token(*cids, *cold)}"}
    a, b = chaos.start_proxies(2, **env)
    assert chaos.redis is not None
    problems: list[str] = []
    async with ClientGroup(auth=auth) as group:
        token = auth.get("Authorization", "").removeprefix("Bearer ") or None
        await warm(group.session, [a, b], cids, token=token)
        start_load(group, [a, b], cids)
        loaded_at = time.monotonic()
        await asyncio.sleep(BASELINE_S)
        paused_at, paused_wall = time.monotonic(), time.time()
        await asyncio.to_thread(chaos.pause, chaos.redis)
        # The fault's schedule: cold requests 1.5 s into the 8 s pause (the 503 is due within
        # the Redis timeout whether or not the replicas have marked Redis down yet).
        await asyncio.sleep(1.5)
        answers = await asyncio.gather(
            *(
                _cold_request(group.session, f"{p.url}/v1/content/{cid}/progress", auth)
                for p, cid in ((a, cold[0]), (b, cold[1]))
            )
        )
        await asyncio.sleep(max(0.0, paused_at + 8.0 - time.monotonic()))
        await asyncio.to_thread(chaos.resume, chaos.redis)
        resumed_at = time.monotonic()
        await asyncio.sleep(AFTER_S)
        stopped_at = time.monotonic()
        await group.stop()

    limit_s = REDIS_TIMEOUT_S + 1.0  # the configured timeout, plus scheduling slack under load
    for answer in answers:
        body = str(answer["body"])
        if (
            answer["status"] != 503
            or '"UNAVAILABLE"' not in body
            or not answer.get("retry_after")
            or answer["elapsed_s"] > limit_s
        ):
            problems.append(
                f"cold request while Redis is paused: want 503 UNAVAILABLE with Retry-After "
                f"within {limit_s:g}s, got {answer}"
            )
    rec = group.recording
    during = [
        o.latency_s
        for o in rec.observations
        if o.mode == "poll" and paused_at + 0.1 <= o.sent_at <= resumed_at - 0.1
    ]
    p99 = percentile(during, 99)
    if not during or p99 >= 0.5:
        problems.append(
            f"hot polls while Redis is paused: {len(during)} polls, p99 {p99 * 1000:.0f} ms, "
            f"max {max(during, default=0) * 1000:.0f} ms (want p99 < 500 ms)"
        )
    for info in rec.clients.values():
        if info.mode != "sse":
            continue
        beats = [t for t in info.heartbeats if paused_at <= t <= resumed_at]
        drops = [t for t in info.reconnects if paused_at <= t <= resumed_at]
        if len(beats) < 2 or drops:
            problems.append(
                f"stream {info.name} while Redis is paused: {len(beats)} heartbeats, "
                f"{len(drops)} disconnects (want heartbeats every 2 s and no disconnect)"
            )
    report = check_history(
        rec.observations,
        await chaos.collect(group.recording),
        timelines=chaos.timelines,
        clients=rec.clients.values(),
        faults=[Fault(paused_at, resumed_at, start_wall=paused_wall, label="Redis SIGSTOP")],
        fresh_within_s=FRESH_WITHIN_S,
        cadence_windows=[
            Window(loaded_at + 1.0, paused_at, frozenset(cids), "the baseline"),
            Window(resumed_at + RECOVERY_S, stopped_at, frozenset(cids), "after SIGCONT"),
        ],
        origin=paused_at,
    )
    text = _report_text(report, chaos, problems)
    assert report.ok and not problems, text


@pytest.mark.timeout(60)
async def test_a_replica_started_before_redis_becomes_ready_by_itself(chaos: ChaosEnv) -> None:
    """Redis down at start-up: the proxy still starts, /readyz is 503 naming the Redis
    address (never its password), a poll is a clear 503; once Redis is up, /readyz turns 200
    and polls work, without a restart. The password appears in no output and no answer."""
    password = "s3cretpw"
    chaos.redis_password = password  # the URL carries it; Redis itself is not running yet
    cid = chaos.container(STAGES)
    address = f"127.0.0.1:{chaos.redis_port}"
    seen: list[str] = []
    try:
        proxy = await asyncio.to_thread(chaos.start_proxy)
    except (RuntimeError, TimeoutError) as exc:
        pytest.fail(f"the proxy did not start while Redis was down: {exc}", pytrace=False)
    async with aiohttp.ClientSession() as session:

        async def get(path: str) -> tuple[int, str, dict[str, str]]:
            async with session.get(
                proxy.url + path, timeout=aiohttp.ClientTimeout(total=15)
            ) as resp:
                text = await resp.text()
                seen.append(text + "\n" + "\n".join(f"{k}: {v}" for k, v in resp.headers.items()))
                return resp.status, text, dict(resp.headers)

        status, text, _ = await get("/readyz")
        assert status == 503, text
        assert address in text, f"/readyz does not name the Redis address {address}: {text}"
        started = time.monotonic()
        status, text, headers = await get(f"/v1/content/{cid}/progress")
        elapsed = time.monotonic() - started
        assert status == 503 and '"UNAVAILABLE"' in text, (status, text)
        assert "Retry-After" in headers, headers
        assert elapsed < REDIS_TIMEOUT_S * 2 + 2.0, f"the 503 took {elapsed:.2f}s"

        await asyncio.to_thread(chaos.start_redis, password=password)

        async def ready() -> bool:
            return (await get("/readyz"))[0] == 200

        assert await wait_for(ready, 15), f"/readyz never became 200: {seen[-1]}"

        async def polls() -> bool:
            return (await get(f"/v1/content/{cid}/progress"))[0] == 200

        assert await wait_for(polls, 10), f"polls never worked: {seen[-1]}"
    proxy.stop()
    leaks = [s for s in seen if password in s]
    assert not leaks, f"the Redis password reached a client: {leaks[0][:300]}"
    assert password not in proxy.all_output(), "the Redis password is in the proxy's output"


@pytest.mark.timeout(90)
async def test_a_stopped_lease_holder_is_replaced_and_cannot_undo_progress(
    chaos: ChaosEnv,
) -> None:
    """SIGSTOP the replica holding every lease for longer than the lease, then SIGCONT.

    tests/integration/test_failover.py covers one resource and the fenced write of the stalled
    holder's late answer; here many resources and clients (all on the surviving replica) are
    checked as a history: the survivor takes over within the lease plus a flush, no client sees
    progress go backwards, the floor holds across the takeover and the old holder's return, no
    5xx reaches anyone, and the cadence continues after the old holder is back.
    """
    chaos.start_redis()
    a, b = chaos.start_proxies(2)
    cids = [chaos.container(STAGES) for _ in range(4)]
    lease_s = float(chaos.proxy_env()["PROXY_LEASE_TTL_S"])
    async with ClientGroup() as group:
        await warm(group.session, [a], cids)  # a fetched them cold, so a holds the leases
        start_load(group, [b], cids, pollers_per_container=3, long_polls=2)
        loaded_at = time.monotonic()
        # Observation windows (baseline, the holder stopped for twice the lease, recovery).
        await asyncio.sleep(BASELINE_S)
        paused_at, paused_wall = time.monotonic(), time.time()
        await asyncio.to_thread(chaos.pause, a)
        await asyncio.sleep(lease_s * 2 + 1.0)
        await asyncio.to_thread(chaos.resume, a)
        resumed_at = time.monotonic()
        await asyncio.sleep(8.0)
        stopped_at = time.monotonic()
        await group.stop()
    takeover = paused_at + lease_s + 1.0  # lease expiry, then b's next interest flush
    report = check_history(
        group.recording.observations,
        await chaos.collect(group.recording),
        timelines=chaos.timelines,
        clients=group.recording.clients.values(),
        faults=[Fault(paused_at, takeover, start_wall=paused_wall, label="lease holder SIGSTOP")],
        fresh_within_s=FRESH_WITHIN_S,
        cadence_windows=[
            Window(loaded_at + 1.0, paused_at, frozenset(cids), "the baseline"),
            Window(takeover, stopped_at, frozenset(cids), "after the takeover"),
        ],
        origin=paused_at,
    )
    text = _report_text(report, chaos, [f"old holder resumed at {resumed_at - paused_at:+.2f}s"])
    assert report.ok, text
