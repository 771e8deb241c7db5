"""The receiver over HTTP: fast 202, one refresh per event, dedupe across replicas, rejections."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from proxy.resources import JOB, PROGRESS, ResourceRef
from proxy.store import keys as store_keys
from proxy.webhooks import sign
from proxy.webhooks.receiver import MAX_BODY_BYTES
from tests.webhooks.helpers import CNT, EVT, JOB_ID, SECRET, Replica, ReplicaFactory, job_event

pytestmark = [pytest.mark.timeout(15)]

JOB_REF = ResourceRef(JOB, JOB_ID)
CNT_REF = ResourceRef(PROGRESS, CNT)
EVT2 = "evt_01JABCDEFGHJKMNPQRSTVWXYZ2"


async def error_of(response: Any) -> dict[str, Any]:
    """The envelope's error object."""
    body = await response.json()
    return dict(body["error"])


async def seen(replica: Replica, event_id: str = EVT) -> bool:
    """True when the event id is recorded in Redis."""
    return bool(await replica.store.redis.exists(store_keys.WEBHOOK_SEEN_PREFIX + event_id))


async def test_answers_202_before_the_refresh_finishes(replica: Replica) -> None:
    """With refresh_now blocked, the 202 still arrives in under 0.5 s; the refresh runs after."""
    await replica.watch(JOB_REF, CNT_REF)
    replica.watching.gate.clear()
    started = time.perf_counter()
    response = await replica.post(job_event(result={"containerId": CNT}))
    elapsed = time.perf_counter() - started
    assert (response.status, await response.json()) == (202, {"received": True})
    assert elapsed < 0.5
    assert len(replica.work) == 1  # the refresh is still running in the background
    replica.watching.gate.set()
    await replica.work.drain()
    assert replica.watching.calls == [JOB_REF.key, CNT_REF.key]
    assert replica.stats.webhooks_received == 1


@pytest.mark.parametrize("event_type", ["job.completed", "job.failed", "job.canceled"])
async def test_each_job_event_refreshes_the_job_once(replica: Replica, event_type: str) -> None:
    """Every terminal job event refreshes the job exactly once."""
    await replica.watch(JOB_REF)
    response = await replica.post(job_event(event_type=event_type))
    await replica.work.drain()
    assert response.status == 202
    assert replica.watching.calls == [JOB_REF.key]


async def test_content_generated_refreshes_the_container_once(replica: Replica) -> None:
    """content.generated refreshes that container's progress once."""
    await replica.watch(CNT_REF)
    payload = {"id": EVT, "type": "content.generated", "data": {"id": CNT, "assets": []}}
    response = await replica.post(payload)
    await replica.work.drain()
    assert response.status == 202
    assert replica.watching.calls == [CNT_REF.key]


async def test_child_org_event_refreshes_under_that_org(replica: Replica) -> None:
    """data.organizationId picks the org-scoped resource key."""
    ref = ResourceRef(JOB, JOB_ID, "org_child1")
    await replica.watch(ref)
    await replica.post(job_event(organizationId="org_child1"))
    await replica.work.drain()
    assert replica.watching.calls == [f"job:org_child1:{JOB_ID}"]


async def test_duplicate_event_id_is_not_processed_twice(replica: Replica) -> None:
    """The same delivery twice: 202 then 409 (a replay), one refresh, two deliveries counted."""
    await replica.watch(JOB_REF)
    first = await replica.post(job_event())
    second = await replica.post(job_event())
    await replica.work.drain()
    assert first.status == 202
    assert second.status == 409
    error = (await second.json())["error"]
    assert error["code"] == "CONFLICT" and error["details"] == {"eventId": EVT, "duplicate": True}
    assert replica.watching.calls == [JOB_REF.key]
    assert replica.stats.webhooks_received == 2
    ttl_ms = await replica.store.redis.pttl(store_keys.WEBHOOK_SEEN_PREFIX + EVT)
    assert 86_000_000 < ttl_ms <= 86_400_000


async def test_duplicate_across_replicas_sharing_redis(make_replica: ReplicaFactory) -> None:
    """Delivered to replica A then B (one Redis): A refreshes once, B answers duplicate."""
    a, b = await make_replica(), await make_replica()
    await a.watch(JOB_REF)
    first = await a.post(job_event())
    second = await b.post(job_event())
    await a.work.drain()
    await b.work.drain()
    assert (first.status, second.status) == (202, 409)
    assert (await second.json())["error"]["details"]["duplicate"] is True
    assert (a.watching.calls, b.watching.calls) == ([JOB_REF.key], [])


async def test_concurrent_deliveries_to_two_replicas_process_once(
    make_replica: ReplicaFactory,
) -> None:
    """The same event sent to two replicas at once: exactly one 202 and one refresh in total."""
    a, b = await make_replica(), await make_replica()
    await a.watch(JOB_REF)
    responses = await asyncio.gather(a.post(job_event()), b.post(job_event()))
    await a.work.drain()
    await b.work.drain()
    assert sorted(r.status for r in responses) == [202, 409]
    assert len(a.watching.calls) + len(b.watching.calls) == 1


async def test_replay_with_new_event_id_is_processed_again(replica: Replica) -> None:
    """A Layers replay (new id, replayOf) is a new event: a second 202 and a second refresh."""
    await replica.watch(JOB_REF)
    await replica.post(job_event())
    replay = await replica.post({**job_event(EVT2), "replayOf": EVT}, event_id=EVT2)
    await replica.work.drain()
    assert replay.status == 202
    assert replica.watching.calls == [JOB_REF.key, JOB_REF.key]


async def test_bad_signature_is_401_with_no_side_effect(replica: Replica) -> None:
    """Signed with another secret: 401 UNAUTHENTICATED, no refresh, nothing recorded."""
    await replica.watch(JOB_REF)
    response = await replica.post(job_event(), secret="whsec_someone_else_0001")
    await replica.work.drain()
    assert response.status == 401
    error = await error_of(response)
    assert (error["code"], error["details"]) == ("UNAUTHENTICATED", {"reason": "mismatch"})
    assert error["requestId"].startswith("req_")
    assert replica.watching.calls == []
    assert not await seen(replica)
    assert replica.stats.webhooks_received == 0


async def test_tampered_body_is_401(replica: Replica) -> None:
    """A body changed after signing is refused with 401."""
    raw = orjson.dumps(job_event())
    stamp = int(replica.clock.wall())
    signature = f"t={stamp},v1={sign(SECRET, stamp, raw)}"
    response = await replica.post(raw.replace(b"completed", b"canceled"), signature=signature)
    assert response.status == 401
    assert replica.watching.calls == []


@pytest.mark.parametrize("offset_s", [301, -301])
async def test_stale_timestamp_is_401_and_says_so(replica: Replica, offset_s: int) -> None:
    """A genuine signature 301 s off: 401 naming the timestamp; the event id stays unrecorded."""
    await replica.watch(JOB_REF)
    stamp = int(replica.clock.wall()) - offset_s
    response = await replica.post(job_event(), t=stamp)
    error = await error_of(response)
    assert (response.status, error["details"]["reason"]) == (401, "stale")
    assert "timestamp is 301s" in error["message"]
    assert not await seen(replica)
    fresh = await replica.post(job_event())  # the same event, freshly signed, still counts
    await replica.work.drain()
    assert fresh.status == 202
    assert replica.watching.calls == [JOB_REF.key]


async def test_stale_after_the_clock_moves(replica: Replica) -> None:
    """Signed now and delivered 5 min + 1 s later (clock advanced): refused as stale."""
    stamp = int(replica.clock.wall())
    replica.clock.advance(301)
    response = await replica.post(job_event(), t=stamp)
    assert (await error_of(response))["details"]["reason"] == "stale"


async def test_missing_signature_is_401(replica: Replica) -> None:
    """No X-Layers-Signature header: 401 with reason missing."""
    response = await replica.post(job_event(), signature="")
    assert response.status == 401
    assert (await error_of(response))["details"]["reason"] == "missing"


async def test_rotation_secrets_accept_the_old_one(make_replica: ReplicaFactory) -> None:
    """LAYERS_WEBHOOK_SECRET='new,old' accepts a body signed with the old secret."""
    replica = await make_replica(secret=f"whsec_new_secret_0002, {SECRET}")
    assert (await replica.post(job_event())).status == 202


async def test_secret_unset_is_404_naming_the_setting(make_replica: ReplicaFactory) -> None:
    """With no secret configured every delivery gets 404 that names LAYERS_WEBHOOK_SECRET."""
    replica = await make_replica(secret="")
    response = await replica.post(job_event())
    error = await error_of(response)
    assert (response.status, error["code"]) == (404, "NOT_FOUND")
    assert "LAYERS_WEBHOOK_SECRET" in error["message"]
    assert not await seen(replica)


async def test_body_over_256_kb_is_413(replica: Replica) -> None:
    """A correctly signed 256 KB + 1 body is refused with 413 PAYLOAD_TOO_LARGE."""
    raw = b" " * (MAX_BODY_BYTES + 1)
    response = await replica.post(raw)
    assert (response.status, (await error_of(response))["code"]) == (413, "PAYLOAD_TOO_LARGE")


async def test_chunked_body_over_256_kb_is_413(replica: Replica) -> None:
    """Without Content-Length (chunked), the cap still applies while reading."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b" " * (64 * 1024)

    response = await replica.client.post(
        "/v1/webhooks/layers",
        data=chunks(),
        headers={"X-Layers-Signature": "t=1,v1=" + "a" * 64, "X-Layers-Event-Id": EVT},
    )
    assert response.status == 413


async def test_body_at_the_cap_is_read(replica: Replica) -> None:
    """Exactly 256 KB (a padded, valid event) is accepted."""
    raw = orjson.dumps(job_event())
    raw = raw + b" " * (MAX_BODY_BYTES - len(raw))
    assert (await replica.post(raw)).status == 202


@pytest.mark.parametrize(
    ("payload", "event_id", "fragment"),
    [
        (job_event(), None, "X-Layers-Event-Id header is missing"),
        (job_event(), "evt_short", "26 letters or digits"),
        (b"{not json", EVT, "not valid JSON"),
        (job_event(EVT2), EVT, "does not match"),
        ({"id": EVT, "type": "job.completed", "data": {}}, EVT, "jobId"),
    ],
)
async def test_invalid_deliveries_are_400_with_no_side_effect(
    replica: Replica, payload: Any, event_id: str | None, fragment: str
) -> None:
    """Signed but unusable deliveries: 400 VALIDATION, no refresh, event id not recorded."""
    response = await replica.post(payload, event_id=event_id)
    error = await error_of(response)
    assert (response.status, error["code"]) == (400, "VALIDATION")
    assert fragment in error["message"]
    assert replica.watching.calls == []
    assert not await seen(replica)


async def test_unknown_type_is_202_and_ignored(replica: Replica) -> None:
    """test.ping answers 202, refreshes nothing, logs webhook_ignored, and is deduplicated."""
    payload = {"id": EVT, "type": "test.ping", "data": {}}
    with capture_logs() as logs:
        response = await replica.post(payload)
    assert response.status == 202
    assert replica.watching.calls == []
    assert [e["type"] for e in logs if e["event"] == "webhook_ignored"] == ["test.ping"]
    assert (await replica.post(payload)).status == 409


async def test_unwatched_resource_is_not_refreshed(replica: Replica) -> None:
    """Nobody watches the job: 202, but no refresh (it would only spend upstream budget)."""
    with capture_logs() as logs:
        response = await replica.post(job_event(result={"containerId": CNT}))
        await replica.work.drain()
    assert response.status == 202
    assert replica.watching.calls == []
    skipped = [e["reason"] for e in logs if e["event"] == "webhook_refresh_skipped"]
    assert skipped == ["unwatched", "unwatched"]


async def write_snapshot(replica: Replica, ref: ResourceRef, status: str) -> int:
    """Store a 200 snapshot of ``ref`` with ``status`` (terminal unless running); its fetched_ms."""
    [touched] = await replica.store.touch_many([(ref.key, True, 0)])
    written, _ = await replica.store.write_data(
        ref.key,
        replica.store.token(touched.fence),
        touched.fence,
        body=orjson.dumps({"status": status}),
        etag='"e"',
        status_code=200,
        status=status,
        stage="finalizing",
        terminal=status != "running",
        upstream_etag="",
    )
    assert written is not None
    return written.fetched_ms


async def test_job_already_terminal_is_not_refreshed(replica: Replica) -> None:
    """A watched job whose stored snapshot is already completed costs no refresh."""
    await write_snapshot(replica, JOB_REF, "completed")
    with capture_logs() as logs:
        await replica.post(job_event())
        await replica.work.drain()
    assert replica.watching.calls == []
    assert [e["reason"] for e in logs if e["event"] == "webhook_refresh_skipped"] == [
        "already_terminal"
    ]


async def test_running_job_snapshot_is_refreshed(replica: Replica) -> None:
    """A watched job still stored as running is refreshed once."""
    await write_snapshot(replica, JOB_REF, "running")
    await replica.post(job_event())
    await replica.work.drain()
    assert replica.watching.calls == [JOB_REF.key]


@pytest.mark.parametrize(("event_after_fetch_s", "refreshed"), [(-10, False), (60, True)])
async def test_terminal_container_refreshed_only_if_event_is_newer(
    replica: Replica, event_after_fetch_s: int, refreshed: bool
) -> None:
    """A completed container is re-polled only for an event created after its last fetch."""
    fetched_ms = await write_snapshot(replica, CNT_REF, "completed")
    created_s = fetched_ms // 1000 + event_after_fetch_s
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created_s))
    payload = {"id": EVT, "type": "content.generated", "createdAt": created, "data": {"id": CNT}}
    await replica.post(payload)
    await replica.work.drain()
    assert replica.watching.calls == ([CNT_REF.key] if refreshed else [])


async def test_redis_down_is_503_and_retryable(replica: Replica, redis_server: Any) -> None:
    """When Redis cannot record the event id: 503 (Layers retries) and no refresh."""
    await replica.watch(JOB_REF)
    redis_server.connected = False
    response = await replica.post(job_event())
    assert (response.status, (await error_of(response))["code"]) == (503, "UNAVAILABLE")
    assert replica.watching.calls == []


async def test_a_failing_refresh_does_not_stop_the_next(replica: Replica) -> None:
    """refresh_now raising for the job still lets the container refresh; the error is logged."""
    await replica.watch(JOB_REF, CNT_REF)
    original = replica.watching.refresh_now

    async def flaky(ref: ResourceRef) -> None:
        await original(ref)
        if ref.kind is JOB:
            raise RuntimeError("boom")

    replica.watching.refresh_now = flaky  # type: ignore[method-assign]
    with capture_logs() as logs:
        await replica.post(job_event(result={"containerId": CNT}))
        await replica.work.drain()
    assert replica.watching.calls == [JOB_REF.key, CNT_REF.key]
    assert [e["event"] for e in logs].count("webhook_refresh_failed") == 1


async def test_shutdown_cancels_and_awaits_running_refreshes(replica: Replica) -> None:
    """Closing the app with a refresh blocked cancels it (1 cancellation, 0 tasks left)."""
    await replica.watch(JOB_REF)
    replica.watching.gate.clear()
    assert (await replica.post(job_event())).status == 202
    await asyncio.wait_for(replica.watching.entered.wait(), 5)
    work = replica.work
    await replica.client.close()
    assert (replica.watching.cancelled, len(work)) == (1, 0)
    assert work.spawn(asyncio.sleep(0), "late") is False


async def test_logs_carry_ids_but_never_the_signature_or_secret(replica: Replica) -> None:
    """Accepted and rejected deliveries log event id and type, never the signature or secret."""
    await replica.watch(JOB_REF)
    with capture_logs() as logs:
        await replica.post(job_event())
        await replica.post(job_event(EVT2), event_id=EVT2, secret="whsec_wrong_secret_0003")
        await replica.work.drain()
    received = [e for e in logs if e["event"] == "webhook_received"]
    assert [(e["event_id"], e["type"]) for e in received] == [(EVT, "job.completed")]
    text = repr(logs)
    for signature in replica.sent:
        assert signature.split("v1=")[1] not in text
    assert SECRET not in text
    assert "whsec_wrong_secret_0003" not in text
