"""The store: every cross-replica operation the proxy does, each one Redis round trip.

Every round trip goes through ``call`` (``base``): bounded by the Redis timeout, recorded in
``health``, and refused at once (``StoreUnavailable``) while Redis is known to be down, so no
caller waits on a dead Redis more than once. ``probe_forever`` notices when it answers again.

One part per concern, all on one client: ``leases`` (interest, leases, fences), ``gate`` (the
claim before every upstream request, cooldown, budget, the floor after Redis forgot),
``snapshots`` (fenced writes, reads, pokes), ``limits`` (tenant request permits, stream slots,
watched sets); the small rest (key state, webhook ids, the census) is here, and so is
``flush_interest``, the one round trip of each interest flush that writes who watches what
(interest and free leases, the census, the tenants' watched sets and stream slots).

The same store runs on one Redis (or ``memory://``) and on a Redis Cluster (a ``RedisCluster``
client, or ``sharded=True`` to exercise the cluster code paths on one server). On a cluster:
every script is single-slot (see ``keys``), the poll gate runs as three single-slot steps (see
``scripts.CLAIM_CHECK``), snapshot writes and pokes SPUBLISH on the resource's shard channel,
and pipelined scripts are sent as EVALSHA per node (loaded on demand).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from proxy.store import keys, scripts
from proxy.store.base import AnyRedis, ScriptCall, text
from proxy.store.budget import BudgetPolicy, Claim
from proxy.store.gate import GateOps
from proxy.store.leases import LeaseOps, Touch, TouchResult
from proxy.store.limits import NO_LIMITS_SYNC, LimitOps, LimitsSync, WatchedCount
from proxy.store.snapshots import SnapshotOps

__all__ = [
    "AnyRedis",
    "BudgetPolicy",
    "Claim",
    "Flushed",
    "LimitsSync",
    "RedisStore",
    "ScriptCall",
    "Touch",
    "TouchResult",
    "WatchedCount",
]


@dataclass(frozen=True, slots=True)
class Flushed:
    """What ``flush_interest`` learned: one ``TouchResult`` per touch, one count per tenant."""

    touched: list[TouchResult]
    watched: list[WatchedCount]


class RedisStore(LeaseOps, GateOps, SnapshotOps, LimitOps):
    """Leases, interest, the poll gate, fenced snapshot writes and the cooldown, on Redis."""

    def _setup(self) -> None:
        super()._setup()
        self._census_merge = self.redis.register_script(scripts.CENSUS_MERGE)

    async def flush_interest(
        self,
        touches: Sequence[Touch],
        census: Mapping[str, str],
        limits: LimitsSync = NO_LIMITS_SYNC,
    ) -> Flushed:
        """Write who watches what, all in one round trip (nothing to write: no round trip).

        ``touches`` as ``touch_many`` (interest, free leases); ``census`` merges (tenant|key →
        expiry|interval) into the census hash; ``limits`` refreshes tenants' watched sets and
        stream slots. Every script of the pipeline has one key (TOUCH: keys of one slot), so on
        a Redis Cluster it is one pipeline per node, sent together. On a failure (which may
        leave some of the writes done) the caller keeps its entries for the next flush.
        """
        batch = list(touches)
        calls = self._touch_calls(batch)
        if census:
            fields = [part for entry in census.items() for part in entry]
            calls.append(ScriptCall(self._census_merge, [keys.WATCHED], fields))
        census_rows = len(calls) - len(batch)
        calls += self._limits_calls(limits)
        rows = await self.run_scripts(calls)
        return Flushed(
            self._touch_results(batch, rows[: len(batch)]),
            self._watched_counts(limits, rows[len(batch) + census_rows :]),
        )

    async def set_key_state(self, state: str) -> None:
        """Record whether the upstream accepts the API key, for every replica's /readyz."""
        await self.call(lambda: self.redis.set(keys.KEY_STATE, state, px=keys.KEY_STATE_TTL_MS))

    async def key_state(self) -> str:
        """The last recorded key state ('' when unknown)."""
        value = await self.call(lambda: self.redis.get(keys.KEY_STATE))
        return text(value) if value is not None else ""

    async def mark_event_seen(self, event_id: str, by: str) -> bool:
        """Record a webhook event id (SET NX, 24 h); False when some replica already had it."""
        fresh = await self.call(
            lambda: self.redis.set(
                keys.WEBHOOK_SEEN_PREFIX + event_id, by, nx=True, px=keys.WEBHOOK_SEEN_TTL_MS
            )
        )
        return bool(fresh)

    # -- the census of watched resources (fair share) -----------------------------------------

    async def census_read(self) -> dict[bytes, bytes]:
        """The whole census hash."""
        raw: dict[bytes, bytes] = await self.call(
            lambda: self.redis.hgetall(keys.WATCHED)  # type: ignore[arg-type,return-value]
        )
        return raw

    async def census_prune(self, fields: Sequence[bytes]) -> None:
        """Drop expired census entries."""
        await self.call(lambda: self.redis.hdel(keys.WATCHED, *fields))
