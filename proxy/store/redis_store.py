"""The store: every cross-replica operation the proxy does, each one Redis round trip."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from proxy.snapshot import Snapshot
from proxy.store import keys, scripts


@dataclass(frozen=True, slots=True)
class TouchResult:
    """What a ``touch`` learned: a lease we just took (fence > 0), and the stored version."""

    key: str
    fence: int
    version: int
    fetched_ms: int
    holder: str


@dataclass(frozen=True, slots=True)
class Claim:
    """The gate's verdict: ``ok`` (ms = Redis now), or why not and for how long (ms)."""

    verdict: str
    ms: int


@dataclass(frozen=True)
class BudgetPolicy:
    """GCRA parameters of the shared upstream budget (0 interval = unlimited)."""

    interval_ms: int = 0
    burst_ms: int = 0

    @staticmethod
    def per_minute(limit: float, burst: int = 1) -> BudgetPolicy:
        """At most ``limit`` requests in any 60 s window, ``burst`` of them back to back.

        GCRA admits ``60 s / interval + burst`` requests in a window, so the rate is lowered by
        the burst to keep that sum at or under ``limit``.
        """
        burst = max(1, burst)
        steady = max(1.0, limit - burst)
        interval = int(60_000 / steady) + 1
        return BudgetPolicy(interval_ms=interval, burst_ms=interval * (burst - 1))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: Sequence[Any]) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for i in range(0, len(flat) - 1, 2):
        k, v = flat[i], flat[i + 1]
        out[k if isinstance(k, bytes) else str(k).encode()] = (
            v if isinstance(v, bytes) else str(v).encode()
        )
    return out


class RedisStore:
    """Leases, interest, the poll gate, fenced snapshot writes and the cooldown, on Redis."""

    def __init__(
        self,
        redis: Redis,
        *,
        owner: str,
        lease_ttl_ms: int,
        linger_ms: int,
        snapshot_ttl_ms: int,
        budget: BudgetPolicy = BudgetPolicy(),
    ) -> None:
        self.redis = redis
        self.owner = owner
        self.lease_ttl_ms = lease_ttl_ms
        self.linger_ms = linger_ms
        self.snapshot_ttl_ms = snapshot_ttl_ms
        self.budget = budget
        self._touch = redis.register_script(scripts.TOUCH)
        self._renew = redis.register_script(scripts.RENEW)
        self._release = redis.register_script(scripts.RELEASE)
        self._claim = redis.register_script(scripts.CLAIM)
        self._write = redis.register_script(scripts.WRITE)
        self._cooldown = redis.register_script(scripts.COOLDOWN)
        self._gcra = redis.register_script(scripts.GCRA)

    def token(self, fence: int) -> str:
        """The lease value this replica holds for ``fence``."""
        return f"{self.owner}:{fence}"

    async def ping(self) -> bool:
        """True when Redis answers."""
        return bool(await self.redis.ping())

    async def touch_many(self, items: Iterable[tuple[str, bool, int]]) -> list[TouchResult]:
        """Refresh interest in each key; take free leases where asked. One round trip.

        Each item is (key, want_lease, revalidate_after_ms); -1 means a terminal snapshot of
        that key is never polled again.
        """
        batch = list(items)
        if not batch:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for key, want, revalidate_after_ms in batch:
            await self._touch(
                keys=[keys.watch(key), keys.lease(key), keys.fence(key), keys.snapshot(key)],
                args=[
                    self.linger_ms,
                    self.owner,
                    self.lease_ttl_ms,
                    1 if want else 0,
                    revalidate_after_ms,
                ],
                client=pipe,
            )
        rows = await pipe.execute()
        return [
            TouchResult(key, int(r[0]), int(r[1]), int(r[2]), _text(r[3]))
            for (key, _, _), r in zip(batch, rows, strict=True)
        ]

    async def renew_many(self, tokens: dict[str, str]) -> set[str]:
        """Extend our leases; return the keys whose lease we no longer hold."""
        if not tokens:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        names = list(tokens)
        for key in names:
            await self._renew(
                keys=[keys.lease(key)], args=[tokens[key], self.lease_ttl_ms], client=pipe
            )
        rows = await pipe.execute()
        return {key for key, ok in zip(names, rows, strict=True) if not int(ok)}

    async def release(self, key: str, token: str) -> None:
        """Hand a lease back (a no-op when it is no longer ours)."""
        await self._release(keys=[keys.lease(key)], args=[token])

    async def release_many(self, tokens: dict[str, str]) -> None:
        """Hand several leases back in one round trip (shutdown)."""
        if not tokens:
            return
        pipe = self.redis.pipeline(transaction=False)
        for key, token in tokens.items():
            await self._release(keys=[keys.lease(key)], args=[token], client=pipe)
        await pipe.execute()

    async def claim(
        self,
        key: str,
        token: str,
        *,
        gap_ms: int,
        require_watch: bool,
        tenant: str = "-",
        tenant_budget: BudgetPolicy = BudgetPolicy(),
    ) -> Claim:
        """Ask the gate whether this replica may call upstream for ``key`` now.

        ``tenant`` pays: its own bucket (at its fair rate) and the shared one must both allow it.
        """
        verdict, ms = await self._claim(
            keys=[
                keys.lease(key),
                keys.last_poll(key),
                keys.watch(key),
                keys.COOLDOWN,
                keys.BUDGET,
                keys.TENANT_BUDGET_PREFIX + tenant,
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
        return Claim(_text(verdict), int(ms))

    async def write_data(
        self,
        key: str,
        token: str,
        fence: int,
        *,
        body: bytes,
        etag: str,
        status_code: int,
        status: str,
        stage: str,
        terminal: bool,
        upstream_etag: str,
        negative_ttl_ms: int = 0,
        extra: bytes = b"",
    ) -> tuple[Snapshot | None, bool]:
        """Store a fetched body (fenced): (new state, changed), or (None, False) if fenced out."""
        row = await self._write(
            keys=[keys.lease(key), keys.snapshot(key), keys.version(key)],
            args=[
                token,
                fence,
                "data",
                self.snapshot_ttl_ms,
                keys.SNAPSHOT_CHANNEL,
                key,
                body,
                etag,
                status_code,
                status,
                stage,
                1 if terminal else 0,
                upstream_etag,
                negative_ttl_ms,
                extra,
            ],
        )
        return self._written(key, row)

    async def write_error(
        self,
        key: str,
        token: str,
        fence: int,
        *,
        error: str,
        error_status: int,
        error_code: str,
        error_only_ttl_ms: int,
    ) -> tuple[Snapshot | None, bool]:
        """Record a failed poll (fenced); the last good body, if any, is kept and served stale."""
        row = await self._write(
            keys=[keys.lease(key), keys.snapshot(key), keys.version(key)],
            args=[
                token,
                fence,
                "error",
                self.snapshot_ttl_ms,
                keys.SNAPSHOT_CHANNEL,
                key,
                error,
                error_status,
                error_code,
                error_only_ttl_ms,
            ],
        )
        return self._written(key, row)

    @staticmethod
    def _written(key: str, row: Sequence[Any]) -> tuple[Snapshot | None, bool]:
        version, changed, flat = int(row[0]), int(row[1]), row[2]
        if version == 0 and not flat:
            return None, False
        return Snapshot.from_fields(key, _pairs(flat)), bool(changed)

    async def read(self, key: str) -> Snapshot | None:
        """The stored snapshot, if any."""
        raw: dict[bytes, bytes] = await self.redis.hgetall(keys.snapshot(key))  # type: ignore[assignment]
        return Snapshot.from_fields(key, raw)

    async def read_many(self, names: Sequence[str]) -> list[Snapshot | None]:
        """Several stored snapshots in one round trip."""
        if not names:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for key in names:
            pipe.hgetall(keys.snapshot(key))
        rows = await pipe.execute()
        return [Snapshot.from_fields(k, r) for k, r in zip(names, rows, strict=True)]

    async def poke(self, key: str) -> None:
        """Ask whichever replica holds ``key``'s lease to poll it now."""
        await self.redis.publish(keys.POKE_CHANNEL, key)

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
        return int(await self._cooldown(keys=[keys.COOLDOWN], args=[max(1, ms)]))

    async def cooldown_left_ms(self) -> int:
        """Milliseconds of cluster-wide cooldown left (0 when none)."""
        return max(0, int(await self.redis.pttl(keys.COOLDOWN)))

    async def set_key_state(self, state: str) -> None:
        """Record whether the upstream accepts the API key, for every replica's /readyz."""
        await self.redis.set(keys.KEY_STATE, state, px=keys.KEY_STATE_TTL_MS)

    async def key_state(self) -> str:
        """The last recorded key state ('' when unknown)."""
        value = await self.redis.get(keys.KEY_STATE)
        return _text(value) if value is not None else ""

    async def gcra(self, key: str, *, interval_ms: int, burst_ms: int) -> tuple[bool, int]:
        """A generic limiter step: (allowed, retry_after_ms)."""
        allowed, retry = await self._gcra(keys=[key], args=[interval_ms, burst_ms])
        return bool(int(allowed)), int(retry)
