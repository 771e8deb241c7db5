"""The poll scheduler: one timer heap per replica for every resource whose lease it holds.

A resource is polled only by the replica holding its lease; every poll first passes the gate in
Redis (lease still ours, somebody still watching, no cooldown, the gap since the last upstream
request on the Redis clock, the shared budget), then writes its result through the fenced
compare-and-set. ``run_due()`` is one pass of the loop, so tests drive it without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
import structlog
from redis.exceptions import RedisError

from proxy.cadence import error_backoff_s, poll_interval_s
from proxy.clock import Clock
from proxy.errors import envelope, new_request_id
from proxy.resources import PROGRESS, ResourceRef
from proxy.services.cache import SnapshotCache
from proxy.services.census import Census
from proxy.services.stats import Stats
from proxy.settings import Settings
from proxy.snapshot import Snapshot, etag_for
from proxy.store.redis_store import BudgetPolicy, RedisStore
from proxy.upstream.client import Outcome, UpstreamClient, UpstreamResult

log = structlog.get_logger("proxy.scheduler")

# Claim a little before the exact interval so local timer jitter never costs a whole extra wait.
_GAP_TOLERANCE_MS = 50


@dataclass
class _Lease:
    ref: ResourceRef
    fence: int
    token: str
    failures: int = 0
    cold: bool = True  # the first poll after taking the lease only needs the floor
    in_flight: bool = False
    tenant: str = "-"  # who asked for it first (pays for the cold fetch)
    last_started: float | None = None  # local monotonic time of the last poll that went out


# Called after a failed container is written, to fetch its lastError (jobs and webhooks hook in).
TerminalHook = Callable[[ResourceRef, Snapshot], Awaitable[None]]


class Scheduler:
    """Owns leases, keeps the timer heap and runs the polls."""

    def __init__(
        self,
        *,
        store: RedisStore,
        upstream: UpstreamClient,
        cache: SnapshotCache,
        settings: Settings,
        clock: Clock,
        stats: Stats,
    ) -> None:
        self._store = store
        self._upstream = upstream
        self._cache = cache
        self._settings = settings
        self._rules = settings.cadence
        self._clock = clock
        self._stats = stats
        self._leases: dict[str, _Lease] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._due: dict[str, float] = {}
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._polls: set[asyncio.Task[None]] = set()
        self._sem = asyncio.Semaphore(settings.upstream_max_connections)
        self.key_rejected = ""  # set while the upstream refuses our key (readiness reads it)
        self._key_ok_recorded = False
        self.on_terminal: list[TerminalHook] = []
        self.census: Census | None = None
        # Why a lease's last poll was held back by the gate ("budget", "cooldown"), for errors.
        self.held_back: dict[str, tuple[str, int]] = {}

    # -- ownership ---------------------------------------------------------------------------

    def owns(self, key: str) -> bool:
        """True while this replica holds the lease for ``key``."""
        return key in self._leases

    def owned_keys(self) -> list[str]:
        """Keys whose lease this replica holds."""
        return list(self._leases)

    def adopt(self, ref: ResourceRef, fence: int, tenant: str = "-") -> None:
        """Start polling ``ref`` under a freshly acquired lease (``fence``), as soon as allowed."""
        current = self._leases.get(ref.key)
        if current is not None and current.fence >= fence:
            return
        self._leases[ref.key] = _Lease(ref, fence, self._store.token(fence), tenant=tenant)
        self._schedule(ref.key, self._clock.monotonic())

    def poke(self, key: str) -> None:
        """Poll ``key`` as soon as the floor allows, if we hold its lease (a webhook said so)."""
        lease = self._leases.get(key)
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
        for key, lease in self._leases.items():
            due = self._due.get(key)
            if due is None or lease.in_flight or lease.last_started is None:
                continue
            earlier = lease.last_started + self._interval_s(self._cache.get(key))
            if earlier < due - 0.05:
                self._schedule(key, max(earlier, self._clock.monotonic()))
                moved += 1
        return moved

    def _drop(self, key: str) -> None:
        self.held_back.pop(key, None)
        self._leases.pop(key, None)
        self._due.pop(key, None)

    async def _release(self, lease: _Lease) -> None:
        self._drop(lease.ref.key)
        try:
            await self._store.release(lease.ref.key, lease.token)
        except RedisError as exc:
            # The lease expires on its own; nothing is lost but a little time.
            log.warning("lease_release_failed", key=lease.ref.key, error=type(exc).__name__)

    def _schedule(self, key: str, at: float) -> None:
        self._due[key] = at
        heapq.heappush(self._heap, (at, next(self._seq), key))
        self._wake.set()

    # -- the loop ------------------------------------------------------------------------------

    def run_due(self) -> float | None:
        """Start a poll for every lease that is due; return seconds until the next one (or None)."""
        now = self._clock.monotonic()
        while self._heap and self._heap[0][0] <= now:
            at, _, key = heapq.heappop(self._heap)
            if self._due.get(key) != at:
                continue  # superseded by a later schedule() call
            del self._due[key]
            lease = self._leases.get(key)
            if lease is None or lease.in_flight:
                continue
            lease.in_flight = True
            task = asyncio.create_task(self._poll(lease))
            self._polls.add(task)
            task.add_done_callback(self._polls.discard)
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
        while self._polls:
            await asyncio.gather(*list(self._polls), return_exceptions=True)

    async def renew_leases(self) -> None:
        """Extend every lease we hold; forget the ones we lost."""
        tokens = {key: lease.token for key, lease in self._leases.items()}
        lost = await self._store.renew_many(tokens)
        for key in lost:
            if self._leases.get(key) is not None and self._leases[key].token == tokens[key]:
                log.info("lease_lost", key=key)
                self._drop(key)

    async def renew_forever(self) -> None:
        """Renew leases every third of their lifetime."""
        period = self._settings.lease_ttl_s / 3
        while True:
            await asyncio.sleep(period)
            try:
                await self.renew_leases()
            except RedisError as exc:
                log.warning("lease_renew_failed", error=type(exc).__name__)

    async def shutdown(self) -> None:
        """Stop polling and hand every lease back at once, so another replica takes over."""
        for task in list(self._polls):
            task.cancel()
        await asyncio.gather(*list(self._polls), return_exceptions=True)
        tokens = {key: lease.token for key, lease in self._leases.items()}
        self._leases.clear()
        self._due.clear()
        try:
            await self._store.release_many(tokens)
        except RedisError as exc:
            log.warning("lease_release_failed", count=len(tokens), error=type(exc).__name__)

    # -- one poll ------------------------------------------------------------------------------

    def _interval_s(self, snap: Snapshot | None) -> float:
        if snap is None or not snap.has_body or snap.error:
            return self._rules.floor_s
        elapsed = max(0.0, (snap.fetched_ms - snap.stage_since_ms) / 1000)
        interval = poll_interval_s(snap.status, elapsed, self._rules)
        if interval is None:
            return self._rules.floor_s
        # Under contention the fair share stretches the cadence (never shortens it).
        fair = self.census.interval_for(snap.key) if self.census is not None else None
        return max(interval, fair) if fair is not None else interval

    async def _poll(self, lease: _Lease) -> None:
        key = lease.ref.key
        started = self._clock.monotonic()
        try:
            snap = self._cache.get(key) or await self._store.read(key)
            gap_s = self._rules.floor_s if lease.cold else self._interval_s(snap)
            payer = self.census.payer(key, lease.tenant) if self.census else lease.tenant
            claim = await self._store.claim(
                key,
                lease.token,
                # The tolerance never cuts into the floor (a cold or handed-over lease asks for
                # exactly the floor, which must hold strictly).
                gap_ms=max(int(self._rules.floor_s * 1000), int(gap_s * 1000) - _GAP_TOLERANCE_MS),
                require_watch=True,
                tenant=payer,
                tenant_budget=self.census.tenant_budget(payer) if self.census else BudgetPolicy(),
            )
            if claim.verdict == "lost":
                self._drop(key)
                return
            if claim.verdict == "idle":
                log.info("poll_stopped", key=key, reason="no watchers")
                await self._release(lease)
                return
            if claim.verdict != "ok":
                self.held_back[key] = (claim.verdict, claim.ms)
                self._schedule(key, started + claim.ms / 1000)
                return
            self.held_back.pop(key, None)
            lease.cold = False
            lease.last_started = started
            send_etag = (
                self._settings.upstream_etags
                and lease.ref.kind.send_if_none_match
                and snap is not None
                and snap.has_body
            )
            async with self._sem:
                result = await self._upstream.fetch(
                    lease.ref, if_none_match=snap.upstream_etag if send_etag and snap else ""
                )
            self._stats.upstream_requests += 1
            self._stats.by_outcome[result.outcome.value] += 1
            self._charge(key)
            await self._record(lease, snap, result, started)
        except RedisError as exc:
            log.warning("poll_redis_error", key=key, error=type(exc).__name__)
            if key in self._leases:
                self._schedule(key, started + self._rules.floor_s)
        finally:
            lease.in_flight = False

    async def _record(
        self, lease: _Lease, snap: Snapshot | None, result: UpstreamResult, started: float
    ) -> None:
        key, ref = lease.ref.key, lease.ref
        s = self._settings
        outcome = result.outcome
        log.info(
            "upstream_fetched",
            key=key,
            outcome=outcome.value,
            status=result.status,
            elapsed_ms=round(result.elapsed_ms, 1),
            upstream_request_id=result.request_id,
        )
        if result.rate_remaining == 0 and result.rate_reset_s:
            # The upstream says the bucket is empty: hold everyone off before a 429 happens.
            await self._store.extend_cooldown(int(result.rate_reset_s * 1000))
        written: Snapshot | None
        if outcome is Outcome.OK or (
            outcome is Outcome.NOT_MODIFIED and snap is not None and snap.has_body
        ):
            if outcome is Outcome.OK:
                body, parsed = result.body, result.parsed
                status, stage = ref.kind.status_of(parsed), ref.kind.stage_of(parsed)
                terminal = ref.kind.is_terminal(parsed)
                etag, upstream_etag = etag_for(body), result.etag
                extra = snap.extra if snap is not None and snap.status == status else b""
                if ref.kind is PROGRESS and status == "failed" and not extra:
                    extra = await self._last_error(ref)
            else:
                assert snap is not None
                body, status, stage, terminal = snap.body, snap.status, snap.stage, snap.terminal
                etag, upstream_etag, extra = snap.etag, snap.upstream_etag, snap.extra
            written, _ = await self._store.write_data(
                key,
                lease.token,
                lease.fence,
                body=body,
                etag=etag,
                status_code=200,
                status=status,
                stage=stage,
                terminal=terminal,
                upstream_etag=upstream_etag,
                extra=extra,
            )
            await self._key_accepted()
        elif outcome is Outcome.NOT_FOUND:
            body = (
                result.body
                if result.error_code == "NOT_FOUND"
                else envelope(
                    "NOT_FOUND", f"{ref.kind.id_field} {ref.id} was not found", new_request_id()
                )
            )
            written, _ = await self._store.write_data(
                key,
                lease.token,
                lease.fence,
                body=body,
                etag=etag_for(body),
                status_code=404,
                status="",
                stage="",
                terminal=True,
                upstream_etag="",
                negative_ttl_ms=int(s.negative_ttl_s * 1000),
            )
            await self._key_accepted()
        else:
            written = await self._record_failure(lease, result)
        if written is None:
            log.warning("write_fenced_out", key=key, fence=lease.fence)
            self._drop(key)
            return
        self._cache.put(written)
        if outcome is Outcome.RATE_LIMITED:
            return  # rescheduled by _record_failure after the cooldown
        if written.error:
            lease.failures += 1
            self._stats.upstream_errors += 1
            delay = max(
                self._interval_s(snap),
                error_backoff_s(
                    lease.failures,
                    base_s=s.backoff_base_s,
                    max_s=s.backoff_max_s,
                    floor_s=s.floor_s,
                ),
            )
            self._schedule(key, started + delay)
            return
        lease.failures = 0
        if written.terminal:
            await self._release(lease)
            if written.status_code == 200:
                for hook in self.on_terminal:
                    await hook(ref, written)
            return
        self._schedule(key, started + self._interval_s(written))

    def _charge(self, key: str) -> None:
        """Attribute one upstream request to the tenants watching ``key`` (equal parts)."""
        tenants = self.census.tenants_of(key) if self.census is not None else ()
        if not tenants:
            tenants = ("-",)
        for tenant in tenants:
            self._stats.tenant_upstream[tenant] += 1 / len(tenants)

    async def _last_error(self, ref: ResourceRef) -> bytes:
        """The failed container's ``lastError`` (the progress body has no reason), or b"".

        One extra upstream GET per failure, charged to the shared budget; skipped when the
        budget or a cooldown says no, since the progress body alone is still correct.
        """
        if await self._store.cooldown_left_ms() or not await self._store.spend_budget():
            return b""
        result = await self._upstream.fetch_path(f"/v1/content/{ref.id}", org=ref.org)
        self._stats.upstream_requests += 1
        self._stats.by_outcome["last_error_" + result.outcome.value] += 1
        if result.outcome is not Outcome.OK:
            return b""
        last_error = result.parsed.get("lastError")
        return orjson.dumps(last_error) if isinstance(last_error, dict) else b""

    async def _record_failure(self, lease: _Lease, result: UpstreamResult) -> Snapshot | None:
        s = self._settings
        outcome = result.outcome
        if outcome is Outcome.RATE_LIMITED:
            wait_s = (
                result.retry_after_s if result.retry_after_s is not None else (s.default_cooldown_s)
            )
            wait_s = max(wait_s, s.floor_s)
            left_ms = await self._store.extend_cooldown(int(wait_s * 1000))
            log.warning("upstream_rate_limited", key=lease.ref.key, cooldown_ms=left_ms)
            self._schedule(lease.ref.key, self._clock.monotonic() + left_ms / 1000)
            status, code, why = 503, "UPSTREAM_RATE_LIMITED", "upstream 429 (rate limited)"
        elif outcome is Outcome.AUTH_REJECTED:
            self.key_rejected = f"upstream rejected the API key ({result.detail})"
            self._key_ok_recorded = False
            await self._store.set_key_state("rejected: " + result.detail)
            log.error(
                "upstream_key_rejected",
                status=result.status,
                code=result.error_code,
                hint="check LAYERS_API_KEY and its scopes (content:read, jobs:read)",
            )
            status, code, why = 502, "UPSTREAM_AUTH", f"upstream rejected the key ({result.detail})"
        elif outcome is Outcome.TIMEOUT:
            status, code, why = 504, "UPSTREAM_TIMEOUT", result.detail
        else:
            status, code, why = 502, "UPSTREAM_UNAVAILABLE", f"upstream {result.detail}"
        written, _ = await self._store.write_error(
            lease.ref.key,
            lease.token,
            lease.fence,
            error=why,
            error_status=status,
            error_code=code,
            error_only_ttl_ms=int(max(2.0, s.floor_s * 2) * 1000),
        )
        return written

    async def _key_accepted(self) -> None:
        # Written on the first success and after a rejection clears, not on every poll.
        if self.key_rejected or not self._key_ok_recorded:
            self.key_rejected = ""
            self._key_ok_recorded = True
            await self._store.set_key_state("ok")
