"""Signed webhook delivery: notice finished runs, sign, send, retry, record."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac

import aiohttp

from proxy.simulator.events import WebhookConfig, WebhookDelivery, WebhookEvent
from proxy.simulator.state import SimulatorState

TICK_S = 0.1
SEND_TIMEOUT_S = 5.0


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """Return ``t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``."""
    signed = f"{timestamp}.".encode() + body
    mac = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def _worth_retrying(status: int) -> bool:
    return status >= 500 or status == 429


class WebhookSender:
    """Polls the state for due events and delivers each in its own task."""

    def __init__(
        self, state: SimulatorState, session: aiohttp.ClientSession, *, tick_s: float = TICK_S
    ) -> None:
        self.state = state
        self.session = session
        self.tick_s = tick_s
        self._tasks: set[asyncio.Task[WebhookDelivery]] = set()

    async def run(self) -> None:
        """Tick forever; cancel to stop."""
        while True:
            self.tick()
            await asyncio.sleep(self.tick_s)

    def tick(self) -> int:
        """Start deliveries for every due event (drops are decided here); return how many."""
        config = self.state.webhook
        events = self.state.due_webhook_events()
        if config is None:
            return 0
        for event in events:
            if config.drop_rate > 0 and self.state.rng.random() < config.drop_rate:
                self._record(WebhookDelivery(event.id, event.type, "dropped"), event)
                continue
            task = asyncio.create_task(self.deliver(event, config))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(events)

    async def deliver(self, event: WebhookEvent, config: WebhookConfig) -> WebhookDelivery:
        """POST one event, retrying 5xx, 429 and network errors with a short backoff."""
        delivery = WebhookDelivery(event.id, event.type, "failed")
        timeout = aiohttp.ClientTimeout(total=SEND_TIMEOUT_S)
        for attempt in range(config.max_retries + 1):
            if attempt:
                await asyncio.sleep(config.retry_backoff_s * 2 ** (attempt - 1))
            delivery.attempts = attempt + 1
            stamp = int(self.state.wall_clock())
            headers = {
                "Content-Type": "application/json",
                "X-Layers-Event-Id": event.id,
                "X-Layers-Signature": signature_header(config.secret, stamp, event.body),
            }
            try:
                async with self.session.post(
                    config.url, data=event.body, headers=headers, timeout=timeout
                ) as response:
                    await response.read()
                    delivery.http_status = response.status
            except (aiohttp.ClientError, TimeoutError):
                delivery.http_status = None
                continue
            if not _worth_retrying(response.status):
                delivery.outcome = "sent" if response.status < 300 else "failed"
                break
        return self._record(delivery, event)

    def _record(self, delivery: WebhookDelivery, event: WebhookEvent) -> WebhookDelivery:
        delivery.t_mono = self.state.clock()
        delivery.payload = event.payload()
        self.state.webhook_log.append(delivery)
        return delivery

    async def aclose(self) -> None:
        """Cancel in-flight deliveries and wait for them to finish."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
