"""The poll gate and what it spends: the claim, the cooldown, the shared budget, the floor.

Only the lease holder calls upstream, and only once the gate says so: the lease is still its
own, somebody still watches, no cooldown, the gap since the last upstream request (on the Redis
clock) is over, and both the shared and the paying tenant's budget allow it.
"""

from __future__ import annotations

from redis.asyncio.cluster import RedisCluster

from proxy.store import keys, scripts
from proxy.store.base import StoreBase, text
from proxy.store.budget import UNLIMITED, BudgetPolicy, Claim


class GateOps(StoreBase):
    """The claim before every upstream request, the cooldown and the budget."""

    def _setup(self) -> None:
        super()._setup()
        self._claim = self.redis.register_script(scripts.CLAIM)
        self._claim_check = self.redis.register_script(scripts.CLAIM_CHECK)
        self._claim_spend = self.redis.register_script(scripts.CLAIM_SPEND)
        self._claim_commit = self.redis.register_script(scripts.CLAIM_COMMIT)
        self._cooldown = self.redis.register_script(scripts.COOLDOWN)
        self._gcra = self.redis.register_script(scripts.GCRA)
        self._memory_age = self.redis.register_script(scripts.MEMORY_AGE)
        self._lowest_slot: dict[str, int] = {}  # master name -> lowest slot it serves

    async def claim(
        self,
        key: str,
        token: str,
        *,
        gap_ms: int,
        require_watch: bool,
        tenant: str = "-",
        tenant_budget: BudgetPolicy = UNLIMITED,
    ) -> Claim:
        """Ask the gate whether this replica may call upstream for ``key`` now.

        ``tenant`` pays: its own bucket (at its fair rate) and the shared one must both allow it.
        On a cluster this is three single-slot steps (see ``scripts.CLAIM_CHECK`` for why that
        is safe); on one Redis it is the one script it always was.
        """
        if self.sharded:
            return await self._claim_in_steps(
                key,
                token,
                gap_ms=max(0, gap_ms),
                require_watch=require_watch,
                tenant=tenant,
                tenant_budget=tenant_budget,
            )
        verdict, ms = await self.call(
            lambda: self._claim(
                keys=[
                    keys.lease(key),
                    keys.last_poll(key),
                    keys.watch(key),
                    keys.COOLDOWN,
                    keys.BUDGET,
                    keys.tenant_budget(tenant),
                ],
                args=[
                    token,
                    max(0, gap_ms),
                    1 if require_watch else 0,
                    self.budget.interval_ms,
                    self.budget.burst_ms,
                    tenant_budget.interval_ms,
                    tenant_budget.burst_ms,
                ],
            )
        )
        return Claim(text(verdict), int(ms))

    async def _claim_in_steps(
        self,
        key: str,
        token: str,
        *,
        gap_ms: int,
        require_watch: bool,
        tenant: str,
        tenant_budget: BudgetPolicy,
    ) -> Claim:
        lease, last = keys.lease(key), keys.last_poll(key)
        # 1. Resource slot, read only: is it ours, watched, and is the gap over?
        verdict, ms = await self.call(
            lambda: self._claim_check(
                keys=[lease, last, keys.watch(key)],
                args=[token, gap_ms, 1 if require_watch else 0],
            )
        )
        if text(verdict) != "ok":
            return Claim(text(verdict), int(ms))
        # 2. Global slot: cooldown, then both budgets, spent together or not at all.
        verdict, ms = await self.call(
            lambda: self._claim_spend(
                keys=[keys.COOLDOWN, keys.BUDGET, keys.tenant_budget(tenant)],
                args=[
                    self.budget.interval_ms,
                    self.budget.burst_ms,
                    tenant_budget.interval_ms,
                    tenant_budget.burst_ms,
                ],
            )
        )
        if text(verdict) != "ok":
            return Claim(text(verdict), int(ms))
        # 3. Resource slot, atomic: still ours, gap still over, record the poll time. A failure
        # here (or before it) leaves one budget unit spent and nothing polled.
        verdict, ms = await self.call(
            lambda: self._claim_commit(keys=[lease, last], args=[token, gap_ms])
        )
        return Claim(text(verdict), int(ms))

    async def spend_budget(self) -> bool:
        """Take one request from the shared upstream budget (for side requests like lastError)."""
        if not self.budget.interval_ms:
            return True
        allowed, _ = await self.gcra(
            keys.BUDGET, interval_ms=self.budget.interval_ms, burst_ms=self.budget.burst_ms
        )
        return allowed

    async def extend_cooldown(self, ms: int) -> int:
        """Make every replica hold off upstream for at least ``ms``; returns the cooldown left."""
        left = await self.call(lambda: self._cooldown(keys=[keys.COOLDOWN], args=[max(1, ms)]))
        return int(left)

    async def cooldown_left_ms(self) -> int:
        """Milliseconds of cluster-wide cooldown left (0 when none)."""
        return max(0, int(await self.call(lambda: self.redis.pttl(keys.COOLDOWN))))

    async def gcra(self, key: str, *, interval_ms: int, burst_ms: int) -> tuple[bool, int]:
        """A generic limiter step: (allowed, retry_after_ms)."""
        allowed, retry = await self.call(
            lambda: self._gcra(keys=[key], args=[interval_ms, burst_ms])
        )
        return bool(int(allowed)), int(retry)

    async def memory_age_ms(self, key: str | None = None) -> int:
        """How long this Redis has remembered the proxy's state (0 right after it forgot).

        A new lease holder waits out the floor from that moment (the last-poll times went with
        the data). On a Redis Cluster, pass the resource ``key``: the answer is then about the
        master that holds the resource's last-poll time, which can restart empty on its own.
        Without a key, or on one Redis, the one global marker.
        """
        marker = self._node_marker(key) if key is not None and self.cluster else None
        marker = marker or keys.MEMORY_SINCE
        age = await self.call(lambda: self._memory_age(keys=[marker], args=[]))
        return int(age)

    def _node_marker(self, key: str) -> str:
        """The memory marker of the master serving ``key``'s slot: in that master's lowest slot.

        A master that restarts empty loses it with the resource's last-poll time; a slot that
        moves takes its keys along (the new owner has its own marker). Only a master whose
        lowest slot changed (resharding) starts a new marker: one floor's wait, on the safe side.
        """
        assert isinstance(self.redis, RedisCluster)
        slots = self.redis.nodes_manager.slots_cache
        slot = keys.key_slot(keys.last_poll(key))
        owners = slots.get(slot)
        if not owners:  # the client has no slot map yet: the resource's own slot is safe too
            return keys.slot_memory_since(slot)
        node = owners[0].name
        lowest = self._lowest_slot.get(node)
        if lowest is None or not slots.get(lowest) or slots[lowest][0].name != node:
            self._lowest_slot = {}
            for s in range(keys.SLOTS - 1, -1, -1):
                if slots.get(s):
                    self._lowest_slot[slots[s][0].name] = s
            lowest = self._lowest_slot.get(node, slot)
        return keys.slot_memory_since(lowest)
