"""Signed webhooks, checked by a real receiver app that recomputes the HMAC."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from proxy.simulator import (
    ContainerScript,
    ManualClock,
    RunningSimulator,
    SimulatorState,
    WebhookConfig,
    WebhookDelivery,
)
from proxy.simulator.events import WebhookEvent
from tests.integration.helpers import wait_until

SECRET = "whsec_simulator_test"
SHORT = ContainerScript(stages=(("generating_visuals", 5.0),))


@dataclass
class Receiver:
    """A webhook endpoint that records raw bodies and can fail the first N posts."""

    url: str = ""
    fail_first: int = 0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        """Record the post; answer 500 while ``fail_first`` lasts, else 204."""
        self.received.append((dict(request.headers), await request.read()))
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=500)
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A receiver served on a free loopback port."""
    recv = Receiver()
    app = web.Application()
    app.router.add_post("/hook", recv.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    recv.url = f"http://{host}:{port}/hook"
    yield recv
    await runner.cleanup()


async def wait_for_deliveries(state: SimulatorState, count: int) -> list[WebhookDelivery]:
    """Wait (up to 3 s of real time) until ``count`` deliveries are recorded."""
    for _ in range(300):
        if len(state.webhook_log) >= count:
            return state.webhook_log
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {len(state.webhook_log)} of {count} deliveries")


async def sender_ticks(state: SimulatorState, monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Wait (up to 10 s of real time) until the webhook sender has asked ``state`` for due
    events ``n`` more times: a window of sender ticks, however slowly the loop runs."""
    asked = 0
    due = state.due_webhook_events

    def counting() -> list[WebhookEvent]:
        nonlocal asked
        asked += 1
        return due()

    monkeypatch.setattr(state, "due_webhook_events", counting)
    assert await wait_until(lambda: asked >= n, 10, 0.01), f"the sender ticked {asked} of {n} times"


def verify(headers: dict[str, str], body: bytes) -> bool:
    """Recompute HMAC-SHA256(secret, "<t>.<body>") and compare with the v1 signature."""
    parts = dict(part.split("=", 1) for part in headers["X-Layers-Signature"].split(","))
    expected = hmac.new(SECRET.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), parts["v1"])


async def test_completed_job_sends_signed_events(
    sim: RunningSimulator, receiver: Receiver, clock: ManualClock
) -> None:
    """A completed run sends job.completed and content.generated, both correctly signed."""
    sim.state.configure_webhooks(WebhookConfig(url=receiver.url, secret=SECRET))
    cid, job_id = sim.state.add_container(SHORT)
    clock.advance(5.0)
    deliveries = await wait_for_deliveries(sim.state, 2)
    assert sorted(d.type for d in deliveries) == ["content.generated", "job.completed"]
    assert {(d.outcome, d.attempts, d.http_status) for d in deliveries} == {("sent", 1, 204)}
    assert len(receiver.received) == 2
    for headers, body in receiver.received:
        assert verify(headers, body)
        assert not verify(headers, body + b" ")
        assert headers["Content-Type"] == "application/json"
        assert headers["X-Layers-Signature"].startswith(f"t={int(clock.wall())},")
    payloads = {d.type: d.payload for d in deliveries}
    job_event = payloads["job.completed"]
    assert job_event["id"].startswith("evt_")
    assert len(job_event["id"]) == 30
    assert job_event["createdAt"] == "2026-04-18T09:30:05Z"
    assert job_event["data"]["jobId"] == job_id
    assert job_event["data"]["kind"] == "content_generate"
    assert job_event["data"]["result"]["containerId"] == cid
    generated = payloads["content.generated"]["data"]
    assert (generated["id"], len(generated["assets"])) == (cid, 1)


async def test_failed_job_sends_job_failed_only(
    sim: RunningSimulator, receiver: Receiver, clock: ManualClock
) -> None:
    """A failed run sends one job.failed carrying the error, and no content.generated."""
    sim.state.configure_webhooks(WebhookConfig(url=receiver.url, secret=SECRET))
    sim.state.add_container(ContainerScript(stages=SHORT.stages, ending="failed"))
    clock.advance(1.5)  # 30 % of the 5 s stage
    deliveries = await wait_for_deliveries(sim.state, 1)
    # A window, anchored to the first delivery: a content.generated would have been due in the
    # same sender tick, so it would be recorded within a few ms of job.failed.
    await asyncio.sleep(0.05)
    assert [d.type for d in sim.state.webhook_log] == ["job.failed"]
    assert deliveries[0].payload["data"]["error"]["code"] == "GENERATION_FAILED"


async def test_retries_keep_the_event_id(
    sim: RunningSimulator, receiver: Receiver, clock: ManualClock
) -> None:
    """Two 500s then a 204: three attempts, all with the same X-Layers-Event-Id."""
    receiver.fail_first = 2
    sim.state.configure_webhooks(WebhookConfig(url=receiver.url, secret=SECRET))
    sim.state.add_container(SHORT, with_job=False)
    clock.advance(5.0)
    [delivery] = await wait_for_deliveries(sim.state, 1)
    assert (delivery.type, delivery.outcome, delivery.attempts) == ("content.generated", "sent", 3)
    assert {h["X-Layers-Event-Id"] for h, _ in receiver.received} == {delivery.event_id}
    assert len({body for _, body in receiver.received}) == 1


async def test_unreachable_endpoint_fails_after_retries(
    sim: RunningSimulator, clock: ManualClock
) -> None:
    """A refused connection is retried 3 times, then recorded as failed with no status."""
    config = WebhookConfig(url="http://127.0.0.1:9/hook", secret=SECRET, retry_backoff_s=0.01)
    sim.state.configure_webhooks(config)
    sim.state.add_container(SHORT, with_job=False)
    clock.advance(5.0)
    [delivery] = await wait_for_deliveries(sim.state, 1)
    assert (delivery.outcome, delivery.attempts, delivery.http_status) == ("failed", 4, None)


async def test_drop_rate_one_sends_nothing(
    sim: RunningSimulator, receiver: Receiver, clock: ManualClock
) -> None:
    """With drop_rate 1.0 every event is logged as dropped and the receiver gets nothing."""
    sim.state.configure_webhooks(WebhookConfig(url=receiver.url, secret=SECRET, drop_rate=1.0))
    sim.state.add_container(SHORT)
    clock.advance(5.0)
    deliveries = await wait_for_deliveries(sim.state, 2)
    assert {d.outcome for d in deliveries} == {"dropped"}
    assert receiver.received == []


async def test_delay_holds_events_back(
    sim: RunningSimulator, receiver: Receiver, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With delay_s 30, nothing is sent 29 s after the end; at 30 s the events go out."""
    sim.state.configure_webhooks(WebhookConfig(url=receiver.url, secret=SECRET, delay_s=30.0))
    sim.state.add_container(SHORT, with_job=False)
    clock.advance(5.0 + 29.0)
    await sender_ticks(sim.state, monkeypatch, 10)  # ten looks at the due events, none due
    assert sim.state.webhook_log == []
    clock.advance(1.0)
    [delivery] = await wait_for_deliveries(sim.state, 1)
    assert delivery.outcome == "sent"


async def test_webhooks_configured_over_the_control_api(
    sim: RunningSimulator, receiver: Receiver, clock: ManualClock
) -> None:
    """POST /_sim/webhooks configures delivery; GET lists deliveries without the secret."""
    async with aiohttp.ClientSession() as session:
        body = {"url": receiver.url, "secret": SECRET, "delay_s": 0, "drop_rate": 0.0}
        async with session.post(f"{sim.url}/_sim/webhooks", json=body) as response:
            assert response.status == 200
        sim.state.add_container(SHORT, with_job=False)
        clock.advance(5.0)
        await wait_for_deliveries(sim.state, 1)
        async with session.get(f"{sim.url}/_sim/webhooks") as response:
            listing = await response.json()
    assert listing["webhook"] == {"url": receiver.url, "delay_s": 0.0, "drop_rate": 0.0}
    assert [d["outcome"] for d in listing["deliveries"]] == ["sent"]
    assert SECRET not in str(listing)
