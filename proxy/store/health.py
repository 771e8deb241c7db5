"""Whether Redis answers, as every caller of the store sees it.

One failed or timed-out command marks Redis down; while it is down the store fails fast
(``StoreUnavailable``) instead of making every caller wait out the Redis timeout, and a probe
pings it until it answers again. Each transition is logged once, with the address but never
the password.
"""

from __future__ import annotations

import time

import structlog
from redis.exceptions import RedisError

log = structlog.get_logger("proxy.redis")


class StoreUnavailable(RedisError):
    """Redis did not answer (or is known to be down); the text is secret-free."""


class RedisHealth:
    """Up/down state of Redis with the time of the last change (monotonic seconds)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.up = True
        self.checked = False  # True once any command or probe has had an answer or failed
        self.changed_at = time.monotonic()
        self.last_error = ""
        self.errors = 0  # commands that failed or timed out (the metrics read it)

    def succeeded(self) -> None:
        """A command answered."""
        self.checked = True
        if not self.up:
            down_s = time.monotonic() - self.changed_at
            self.up = True
            self.changed_at = time.monotonic()
            self.last_error = ""
            log.warning("redis_recovered", address=self.address, down_s=round(down_s, 1))

    def failed(self, exc: BaseException) -> None:
        """A command failed or timed out."""
        first = not self.checked
        self.checked = True
        self.errors += 1
        self.last_error = type(exc).__name__
        if self.up:
            self.up = False
            self.changed_at = time.monotonic()
            log.error(
                "redis_unreachable",
                address=self.address,
                error=self.last_error,
                at_start=first,
                hint="serving what memory holds; cold requests get 503 until Redis answers",
            )

    def describe(self) -> str:
        """For /readyz: 'ok', or why not (with the address)."""
        if self.up:
            return "ok"
        down_s = time.monotonic() - self.changed_at
        return f"unreachable at {self.address} ({self.last_error}, for {down_s:.0f}s)"
