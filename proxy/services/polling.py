"""One poll of one lease: the gate, the upstream request, the fenced write, what comes next.

The scheduler (``scheduler``) decides when; this module does the poll itself. Each poll first
passes the gate in Redis (lease still ours, somebody still watching, no cooldown, the gap since
the last upstream request on the Redis clock, the shared budget), sends the request at once,
writes the answer through the fenced compare-and-set and puts what was written in memory. The
writer never reads its own write back: the write's reply is the stored state.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog

from proxy.cadence import error_backoff_s, snapshot_interval_s
from proxy.clock import Clock
from proxy.metrics import Metrics
from proxy.resources import PROGRESS, ResourceRef
from proxy.services.cache import SnapshotCache
from proxy.services.census import NO_CENSUS, FairShare
from proxy.services.leases import Lease, Leases
from proxy.services.poll_records import (
    BadBodyLog,
    failure_record,
    fields_not_found,
    fields_of_body,
    fields_unchanged,
)
from proxy.services.stats import Stats
from proxy.settings import Settings
from proxy.snapshot import Snapshot
from proxy.store.errors import StoreError
from proxy.store.redis_store import RedisStore
from proxy.upstream.client import Outcome, UpstreamClient, UpstreamResult

log = structlog.get_logger("proxy.scheduler")

# Claim a little before the exact interval so local timer jitter never costs a whole extra wait.
_GAP_TOLERANCE_MS = 50
# How often a replica whose polls succeed re-records "the key is accepted" for the others.
_KEY_STATE_REFRESH_S = 60.0
# Outcomes that show the key is accepted and the upstream answering.
_HEALTHY = (Outcome.OK, Outcome.NOT_MODIFIED, Outcome.NOT_FOUND)

# Called after a failed container is written, to fetch its lastError (jobs and webhooks hook in).
TerminalHook = Callable[[ResourceRef, Snapshot], Awaitable[None]]
# Poll ``key`` at local monotonic time ``at`` (the scheduler's timer heap).
Schedule = Callable[[str, float], None]


class PollPass:
    """Runs polls for the scheduler and keeps what they taught about the upstream."""

    def __init__(
        self,
        *,
        store: RedisStore,
        upstream: UpstreamClient,
        cache: SnapshotCache,
        settings: Settings,
        clock: Clock,
        stats: Stats,
        leases: Leases,
        schedule: Schedule,
        census: FairShare = NO_CENSUS,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._upstream = upstream
        self._cache = cache
        self._settings = settings
        self._rules = settings.cadence
        self._clock = clock
        self._stats = stats
        self._leases = leases
        self._schedule = schedule
        self.census = census
        self.metrics = metrics or Metrics()
        self.on_terminal: list[TerminalHook] = []
        # Why a lease's last poll was held back by the gate ("budget", "cooldown"), for errors.
        self.held_back: dict[str, tuple[str, int]] = {}
        self.key_rejected = ""  # set while the upstream refuses our key (readiness reads it)
        self.key_ok_recorded_at = -math.inf  # when "ok" was last written for other replicas
        # This replica's last upstream answer: (outcome or detail, ok?, monotonic time).
        self.last_upstream: tuple[str, bool, float] | None = None
        self._bad_bodies = BadBodyLog()

    def interval_s(self, snap: Snapshot | None) -> float:
        """Seconds from one poll of ``snap``'s resource to the next (cadence, stretched fairly)."""
        if snap is None or not snap.has_body or snap.error:
            return self._rules.floor_s
        is_list = ResourceRef.kind_of_key(snap.key).list_cadence
        interval = snapshot_interval_s(snap, self._rules, is_list=is_list)
        if interval is None:
            return self._rules.floor_s
        # Under contention the fair share stretches the cadence (never shortens it).
        fair = self.census.interval_for(snap.key)
        return max(interval, fair) if fair is not None else interval

    async def poll(self, lease: Lease) -> None:
        """One poll of ``lease``'s resource (rescheduled by itself, whatever happens)."""
        key = lease.ref.key
        started = self._clock.monotonic()
        try:
            snap = self._cache.get(key) or await self._store.read(key)
            # A connection first, then the claim: a poll that had to wait for a connection
            # after claiming would go out late, and the next one (claimed on time) early.
            slot = await self._upstream.acquire_slot(failing=lease.failures > 0)
            if slot is None:
                self._stats.pool_waits += 1
                self._schedule(key, self._clock.monotonic() + self._rules.floor_s / 2)
                return
            with slot:
                await self._claim_and_fetch(lease, snap)
        except StoreError as exc:
            # The outage itself is logged once by the store's health; this is per poll.
            log.debug("poll_redis_error", key=key, error=type(exc).__name__)
            if self._leases.get(key) is lease:
                self._schedule(key, max(started, self._clock.monotonic()) + self._rules.floor_s)
        finally:
            lease.in_flight = False

    async def _claim_and_fetch(self, lease: Lease, snap: Snapshot | None) -> None:
        """Pass the gate, then send the request at once and record its answer."""
        if lease.cold and await self._floor_pending(lease):
            return
        key = lease.ref.key
        gap_s = self._rules.floor_s if lease.cold else self.interval_s(snap)
        payer = self.census.payer(key, lease.tenant)
        asked = self._clock.monotonic()
        claim = await self._leases.claim(
            lease,
            # The tolerance never cuts into the floor (a cold or handed-over lease asks for
            # exactly the floor, which must hold strictly).
            gap_ms=max(int(self._rules.floor_s * 1000), int(gap_s * 1000) - _GAP_TOLERANCE_MS),
            tenant=payer,
            budget=self.census.tenant_budget(payer),
        )
        if claim.verdict == "lost":
            return
        if claim.verdict == "idle":
            log.info("poll_stopped", key=key, reason="no watchers")
            await self._leases.hand_back(lease)
            return
        if claim.verdict != "ok":
            self.held_back[key] = (claim.verdict, claim.ms)
            self._schedule(key, asked + claim.ms / 1000)
            return
        self.held_back.pop(key, None)
        lease.cold = False
        # The cadence runs from when the request went out (right after the claim).
        started = lease.last_started = self._clock.monotonic()
        send_etag = (
            self._settings.upstream_etags
            and lease.ref.kind.send_if_none_match
            and snap is not None
            and snap.has_body
        )
        result = await self._upstream.fetch(
            lease.ref, if_none_match=snap.upstream_etag if send_etag and snap else ""
        )
        self._count_upstream(lease.ref.kind.name, result.outcome.value, result)
        self._charge(key)
        await self._record(lease, snap, result, started)

    async def _floor_pending(self, lease: Lease) -> bool:
        """True (and rescheduled) while a Redis that just forgot still owes the floor.

        A Redis that restarted, was flushed or failed over has forgotten when the previous
        holder last polled: the first poll under a new lease waits out the floor from then.
        """
        key = lease.ref.key
        wait_ms = int(self._rules.floor_s * 1000) - await self._store.memory_age_ms(key)
        if wait_ms <= 0:
            return False
        self._schedule(key, self._clock.monotonic() + wait_ms / 1000)
        return True

    # -- recording an answer ---------------------------------------------------------------------

    async def _record(
        self, lease: Lease, snap: Snapshot | None, result: UpstreamResult, started: float
    ) -> None:
        """Write the answer (fenced), keep it in memory, then schedule what comes next."""
        self._note_answer(lease.ref.key, result)
        if result.rate_remaining == 0 and result.rate_reset_s:
            # The upstream says the bucket is empty: hold everyone off before a 429 happens.
            await self._store.extend_cooldown(int(result.rate_reset_s * 1000))
        written, answered = await self._write(lease, snap, result)
        if written is not None:
            # At once, with no await since the write's reply: the subscriber tells our own
            # announcement from another writer's by what it finds in memory.
            self._cache.put(written)
        if answered:
            await self._key_accepted()
        if written is None:
            log.warning("write_fenced_out", key=lease.ref.key, fence=lease.fence)
            self._leases.forget(lease)
            return
        await self._next(lease, snap, written, result.outcome, started)

    def _note_answer(self, key: str, result: UpstreamResult) -> None:
        outcome = result.outcome
        healthy = outcome in _HEALTHY
        self.last_upstream = (result.detail or outcome.value, healthy, self._clock.monotonic())
        log.info(
            "upstream_fetched",
            key=key,
            outcome=outcome.value,
            status=result.status,
            elapsed_ms=round(result.elapsed_ms, 1),
            upstream_request_id=result.request_id,
        )

    async def _write(
        self, lease: Lease, snap: Snapshot | None, result: UpstreamResult
    ) -> tuple[Snapshot | None, bool]:
        """The fenced write of this answer: a body, a 404, or a failure.

        Returns what was stored (None if fenced out) and whether the upstream answered (the
        key is accepted).
        """
        outcome = result.outcome
        if outcome is Outcome.OK:
            fields = await self._fields_of_body(lease.ref, snap, result)
        elif outcome is Outcome.NOT_MODIFIED and snap is not None and snap.has_body:
            fields = fields_unchanged(snap)
        elif outcome is Outcome.NOT_FOUND:
            fields = fields_not_found(lease.ref, result, int(self._settings.negative_ttl_s * 1000))
        else:
            return await self._write_failure(lease, result), False
        written, _ = await self._store.write_data(lease.ref.key, lease.token, lease.fence, **fields)
        return written, True

    async def _fields_of_body(
        self, ref: ResourceRef, snap: Snapshot | None, result: UpstreamResult
    ) -> dict[str, Any]:
        if ref.kind.derive is not None:  # a project list keeps what recently ended
            previous = orjson.loads(snap.body) if snap is not None and snap.has_body else None
            now_ms = int(self._clock.wall() * 1000)
            derived = ref.kind.derive(previous, result.parsed, ref.id, now_ms)
            result = dataclasses.replace(result, parsed=derived, body=orjson.dumps(derived))
        status = ref.kind.status_of(result.parsed)
        extra = snap.extra if snap is not None and snap.status == status else b""
        if ref.kind is PROGRESS and status == "failed" and not extra:
            extra = await self._last_error(ref)
        return fields_of_body(ref, result, status, extra)

    async def _write_failure(self, lease: Lease, result: UpstreamResult) -> Snapshot | None:
        """Record a failed poll; a 429 cools every replica down, a rejected key is remembered."""
        if result.outcome is Outcome.RATE_LIMITED:
            await self._cool_down(lease.ref.key, result)
        elif result.outcome is Outcome.AUTH_REJECTED:
            await self._key_rejected(result)
        elif result.outcome is Outcome.BAD_BODY:
            self._bad_bodies.note(lease.ref.key, result)
        status, code, why = failure_record(result)
        written, _ = await self._store.write_error(
            lease.ref.key,
            lease.token,
            lease.fence,
            error=why,
            error_status=status,
            error_code=code,
            error_only_ttl_ms=int(max(2.0, self._settings.floor_s * 2) * 1000),
        )
        return written

    async def _cool_down(self, key: str, result: UpstreamResult) -> None:
        s = self._settings
        wait_s = result.retry_after_s if result.retry_after_s is not None else s.default_cooldown_s
        left_ms = await self._store.extend_cooldown(int(max(wait_s, s.floor_s) * 1000))
        log.warning("upstream_rate_limited", key=key, cooldown_ms=left_ms)
        self._schedule(key, self._clock.monotonic() + left_ms / 1000)

    async def _key_rejected(self, result: UpstreamResult) -> None:
        self.key_rejected = f"upstream rejected the API key ({result.detail})"
        self.key_ok_recorded_at = -math.inf
        await self._store.set_key_state("rejected: " + result.detail)
        log.error(
            "upstream_key_rejected",
            status=result.status,
            code=result.error_code,
            hint="check LAYERS_API_KEY and its scopes (content:read, jobs:read)",
        )

    async def _next(
        self,
        lease: Lease,
        snap: Snapshot | None,
        written: Snapshot,
        outcome: Outcome,
        started: float,
    ) -> None:
        """After the write: back off, stop at a terminal state, or poll at the cadence."""
        if outcome is Outcome.RATE_LIMITED:
            return  # rescheduled after the cooldown
        key, s = lease.ref.key, self._settings
        if written.error:
            lease.failures += 1
            self._stats.upstream_errors += 1
            backoff = error_backoff_s(
                lease.failures, base_s=s.backoff_base_s, max_s=s.backoff_max_s, floor_s=s.floor_s
            )
            self._schedule(key, started + max(self.interval_s(snap), backoff))
            return
        lease.failures = 0
        if written.terminal:
            await self._leases.hand_back(lease)
            if written.status_code == 200:
                for hook in self.on_terminal:
                    await hook(lease.ref, written)
            return
        self._schedule(key, started + self.interval_s(written))

    # -- accounting ------------------------------------------------------------------------------

    def _count_upstream(self, kind: str, outcome: str, result: UpstreamResult) -> None:
        """One upstream GET, in the admin stats and the metrics alike."""
        self._stats.upstream_requests += 1
        self._stats.by_outcome[outcome] += 1
        self.metrics.upstream_request(kind, result.status, result.elapsed_ms / 1000)

    def _charge(self, key: str) -> None:
        """Attribute one upstream request to the tenants watching ``key`` (equal parts)."""
        tenants = self.census.tenants_of(key) or ("-",)
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
        self._count_upstream("container", "last_error_" + result.outcome.value, result)
        if result.outcome is not Outcome.OK:
            return b""
        last_error = result.parsed.get("lastError")
        return orjson.dumps(last_error) if isinstance(last_error, dict) else b""

    async def _key_accepted(self) -> None:
        # Written after a rejection clears and then once a minute (the state's TTL is 5 min),
        # not on every poll, so every replica's /readyz keeps seeing "ok" while polls succeed.
        now = self._clock.monotonic()
        if self.key_rejected or now - self.key_ok_recorded_at >= _KEY_STATE_REFRESH_S:
            self.key_rejected = ""
            self.key_ok_recorded_at = now
            await self._store.set_key_state("ok")
