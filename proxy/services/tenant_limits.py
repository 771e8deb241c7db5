"""Per-tenant limits: request rate across replicas, open streams, distinct watched resources.

In open mode (no tenant) every check passes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from proxy.clock import Clock
from proxy.resources import ResourceRef
from proxy.settings import Settings
from proxy.store.redis_store import RedisStore

if TYPE_CHECKING:
    from proxy.web.access import Caller


class TenantLimits:
    """Enforces each tenant's ``requests_per_second``, ``max_streams`` and ``max_watched``."""

    def __init__(self, *, store: RedisStore, settings: Settings, clock: Clock) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock

    async def admit(self, caller: Caller) -> None:
        """Raise ``TooManyRequests`` (with Retry-After) when the tenant is over its request rate."""

    def watch(self, caller: Caller, ref: ResourceRef) -> None:
        """Raise ``TooManyRequests`` when ``ref`` would exceed the tenant's ``max_watched``."""

    @asynccontextmanager
    async def stream(self, caller: Caller) -> AsyncIterator[None]:
        """Hold one of the tenant's ``max_streams`` slots; ``TooManyRequests`` when none is free."""
        yield
