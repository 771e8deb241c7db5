"""The poll scheduler: one timer heap per replica for every resource whose lease it holds.

A resource is polled only by the replica holding its lease (``leases``); each poll (``polling``)
first passes the gate in Redis, then writes its result through the fenced compare-and-set and
schedules the next one. ``run_due()`` is one pass of the loop, so tests drive it without
sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math

import structlog

from proxy.clock import Clock
from proxy.metrics import Metrics
from proxy.services.cache import SnapshotCache
from proxy.services.census import NO_CENSUS, FairShare
from proxy.services.leases import Lease, Leases
from proxy.services.polling import PollPass, TerminalHook
from proxy.services.stats import Stats
from proxy.settings import Settings
from proxy.store.errors import StoreError
from proxy.store.redis_store import RedisStore
from proxy.upstream.client import UpstreamClient

log = structlog.get_logger("proxy.scheduler")

# Cadence polls of one replica start at least this far apart (less when it holds so many leases
# that this would crowd the floor): about one fan-out of a snapshot to 1,000 streams.
MAX_SPACING_S = 0.05

__all__ = ["Scheduler", "TerminalHook"]


class Scheduler:
    """Keeps the timer heap of this replica's leases and starts their polls when due."""

    def __init__(
        self,
        *,
        store: RedisStore,
        upstream: UpstreamClient,
        cache: SnapshotCache,
        settings: Settings,
        clock: Clock,
        stats: Stats,
        census: FairShare = NO_CENSUS,
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._cache = cache
        self.leases = Leases(store)
        self.leases.on_adopt = self._adopted
        self.leases.on_forget = self._forgotten
        self.polls = PollPass(
            store=store,
            upstream=upstream,
            cache=cache,
            settings=settings,
            clock=clock,
            stats=stats,
            leases=self.leases,
            schedule=self._schedule,
            census=census,
            metrics=metrics,
        )
        # Why a lease's last poll was held back by the gate ("budget", "cooldown"), for errors.
        self.held_back = self.polls.held_back
        self.on_terminal: list[TerminalHook] = self.polls.on_terminal
        self._heap: list[tuple[float, int, str]] = []
        self._due: dict[str, float] = {}
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_start = -math.inf  # local monotonic time the last poll started

    # -- ownership ---------------------------------------------------------------------------

    def owns(self, key: str) -> bool:
        """True while this replica holds the lease for ``key``."""
        return self.leases.owns(key)

    def owned_keys(self) -> list[str]:
        """Keys whose lease this replica holds."""
        return self.leases.keys()

    def _adopted(self, lease: Lease) -> None:
        """A lease was taken (or a newer fence adopted): poll as soon as the floor allows."""
        self._schedule(lease.ref.key, self._clock.monotonic())

    def _forgotten(self, key: str) -> None:
        self.held_back.pop(key, None)
        self._due.pop(key, None)

    def poke(self, key: str) -> None:
        """Poll ``key`` as soon as the floor allows, if we hold its lease (a webhook said so)."""
        lease = self.leases.get(key)
        if lease is not None:
            lease.cold = True
            self._schedule(key, self._clock.monotonic())

    def reschedule_earlier(self) -> int:
        """Bring polls forward when the fair intervals shrank (the census was recomputed).

        A poll is scheduled with the interval in force when the previous one went out; without
        this, a resource whose fair interval dropped would still wait out the old, longer one.
        Returns how many polls moved.
        """
        moved = 0
        for lease in self.leases.held():
            key = lease.ref.key
            due = self._due.get(key)
            if due is None or lease.in_flight or lease.last_started is None:
                continue
            earlier = lease.last_started + self.polls.interval_s(self._cache.get(key))
            if earlier < due - 0.05:
                self._schedule(key, max(earlier, self._clock.monotonic()))
                moved += 1
        return moved

    def due_at(self, key: str) -> float | None:
        """When ``key``'s next poll is due (local monotonic s; None while one runs, or not ours)."""
        return self._due.get(key)

    def _schedule(self, key: str, at: float) -> None:
        self._push(key, at)
        self._wake.set()

    def _push(self, key: str, at: float) -> None:
        self._due[key] = at
        heapq.heappush(self._heap, (at, next(self._seq), key))

    def spacing_s(self) -> float:
        """The least time between two cadence polls' starts here (see ``run_due``)."""
        return min(MAX_SPACING_S, self._settings.floor_s / (2 * max(1, len(self.leases))))

    # -- the loop ------------------------------------------------------------------------------

    def run_due(self) -> float | None:
        """Start a poll for every lease that is due; return seconds until the next one (or None).

        Cadence polls start at least ``spacing_s`` apart: polls that fell due together (after a
        stall of the loop, say) would otherwise keep one phase for good, and their answers' fan-
        outs would queue behind each other at every turn. Only ever later, so the cadence holds;
        a cold lease's first poll (a client is waiting) is never held back.
        """
        now = self._clock.monotonic()
        spacing_s = self.spacing_s()
        while self._heap and self._heap[0][0] <= now:
            at, _, key = heapq.heappop(self._heap)
            if self._due.get(key) != at:
                continue  # superseded by a later schedule() call
            lease = self.leases.get(key)
            if lease is None or lease.in_flight:
                del self._due[key]
                continue
            next_start = self._last_start + spacing_s
            if not lease.cold and next_start > now:
                self._push(key, next_start)
                continue
            del self._due[key]
            self._last_start = now
            lease.in_flight = True
            task = asyncio.create_task(self.polls.poll(lease))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return self._heap[0][0] - now if self._heap else None

    async def run(self) -> None:
        """Poll forever (cancel to stop)."""
        while True:
            self._wake.clear()
            wait_s = self.run_due()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._wake.wait()

    async def drain(self) -> None:
        """Wait for the polls in flight (tests use this after ``run_due``)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def renew_forever(self) -> None:
        """Renew leases every third of their lifetime."""
        period = self._settings.lease_ttl_s / 3
        while True:
            await asyncio.sleep(period)
            try:
                await self.leases.renew()
            except StoreError as exc:
                log.debug("lease_renew_failed", error=type(exc).__name__)

    async def shutdown(self) -> None:
        """Stop polling and hand every lease back at once, so another replica takes over."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.leases.hand_back_all()
        self._due.clear()

    # -- what the polls taught (readiness) -----------------------------------------------------

    @property
    def key_rejected(self) -> str:
        """Why the upstream refuses our key, while it does ('' otherwise)."""
        return self.polls.key_rejected

    @property
    def key_accepted_here(self) -> bool:
        """True once an upstream answer on this replica showed the key is accepted."""
        return self.polls.key_ok_recorded_at > -math.inf and not self.polls.key_rejected

    def upstream_summary(self) -> str:
        """This replica's last upstream answer and its age, for /readyz."""
        if self.polls.last_upstream is None:
            return "no upstream request from this replica yet"
        what, ok, at = self.polls.last_upstream
        age_s = max(0.0, self._clock.monotonic() - at)
        return f"{'ok' if ok else 'failing: ' + what} ({age_s:.0f}s ago)"
