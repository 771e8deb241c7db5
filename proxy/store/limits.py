"""The tenant limits' Redis state: request permits, stream slots, watched sets (one key each).

Permits and stream slots are taken (and slots given back) with a round trip each; refreshing
the watched sets and the held slots is part of the interest flush (``LimitsSync``, sent by
``RedisStore.flush_interest`` with the flush's other writes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from proxy.store import keys, limit_scripts
from proxy.store.base import ScriptCall, StoreBase

# What a tenant's watched-set refresh answers: (distinct resources cluster-wide, the members
# when that count reached ``members_from``, else []).
WatchedCount = tuple[int, list[Any]]


@dataclass(frozen=True, slots=True)
class LimitsSync:
    """The tenant limits' writes of one interest flush (sent by ``RedisStore.flush_interest``).

    ``watched``: (tenant, [members_from, ms_left, key, ms_left, key, ...]) per tenant whose
    watched set is refreshed; ``slots``: (tenant, [member, ...]) per tenant whose stream slots
    are extended by ``slot_ttl_ms``. One single-key script per entry.
    """

    watched: Sequence[tuple[str, Sequence[Any]]] = ()
    slots: Sequence[tuple[str, Sequence[str]]] = ()
    slot_ttl_ms: int = 0

    def empty(self) -> bool:
        """True when there is nothing to write."""
        return not self.watched and not self.slots


NO_LIMITS_SYNC = LimitsSync()


class LimitOps(StoreBase):
    """Cluster-wide state of ``requests_per_second``, ``max_streams`` and ``max_watched``."""

    def _setup(self) -> None:
        super()._setup()
        self._take_permits = self.redis.register_script(limit_scripts.TAKE_PERMITS)
        self._slot_take = self.redis.register_script(limit_scripts.SLOT_TAKE)
        self._slot_refresh = self.redis.register_script(limit_scripts.SLOT_REFRESH)
        self._watch_sync = self.redis.register_script(limit_scripts.WATCH_SYNC)

    async def take_permits(
        self, tenant: str, *, window_ms: int, limit: int, want: int, uid: str
    ) -> tuple[int, int]:
        """Up to ``want`` permits from the tenant's sliding window: (granted, retry_ms)."""
        granted, retry_ms = await self.call(
            lambda: self._take_permits(
                keys=[keys.tenant_rate_log(tenant), keys.tenant_rate_sum(tenant)],
                args=[window_ms, limit, want, uid],
            )
        )
        return int(granted), int(retry_ms)

    async def take_stream_slot(
        self, tenant: str, member: str, *, ttl_ms: int, limit: int
    ) -> tuple[bool, int]:
        """One of the tenant's ``limit`` stream slots: (taken, slots now held)."""
        taken, count = await self.call(
            lambda: self._slot_take(
                keys=[keys.tenant_streams(tenant)], args=[member, ttl_ms, limit]
            )
        )
        return bool(int(taken)), int(count)

    async def release_stream_slot(self, tenant: str, member: str) -> None:
        """Give a stream slot back."""
        await self.call(lambda: self.redis.zrem(keys.tenant_streams(tenant), member))

    def _limits_calls(self, sync: LimitsSync) -> list[ScriptCall]:
        """The scripts of one ``LimitsSync``: the watched sets first, then the stream slots."""
        calls = [
            ScriptCall(self._watch_sync, [keys.tenant_watched(tenant)], list(args))
            for tenant, args in sync.watched
        ]
        calls += [
            ScriptCall(self._slot_refresh, [keys.tenant_streams(tenant)], [sync.slot_ttl_ms, *held])
            for tenant, held in sync.slots
        ]
        return calls

    @staticmethod
    def _watched_counts(sync: LimitsSync, rows: Sequence[Any]) -> list[WatchedCount]:
        """The answers of ``_limits_calls(sync)``: (count, members or []) per watched tenant."""
        return [(int(row[0]), list(row[1])) for row in rows[: len(sync.watched)]]
