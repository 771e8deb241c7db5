"""Leases in Redis: interest (the watch key), free leases taken with a new fence, renewals.

``proxy.services.leases`` is the one caller: it keeps this replica's side of every lease.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.store import keys, scripts
from proxy.store.base import ScriptCall, StoreBase, text


@dataclass(frozen=True, slots=True)
class TouchResult:
    """What a ``touch`` learned: a lease we just took (fence > 0), and the stored version."""

    key: str
    fence: int
    version: int
    fetched_ms: int
    holder: str


# (resource key, want_lease, revalidate_after_ms): one resource of a touch.
Touch = tuple[str, bool, int]


class LeaseOps(StoreBase):
    """Interest, leases and fences."""

    def _setup(self) -> None:
        super()._setup()
        self._touch = self.redis.register_script(scripts.TOUCH)
        self._renew = self.redis.register_script(scripts.RENEW)
        self._release = self.redis.register_script(scripts.RELEASE)
        # Called with the keys of every ``touch_many`` (this replica's interest, and each cold
        # fetch before it waits): the cluster subscriber subscribes to their channels.
        self.touch_listeners: list[Callable[[list[str]], None]] = []

    def token(self, fence: int) -> str:
        """The lease value this replica holds for ``fence``."""
        return f"{self.owner}:{fence}"

    async def touch_many(self, items: Iterable[Touch]) -> list[TouchResult]:
        """Refresh interest in each key; take free leases where asked. One round trip.

        Each item is (key, want_lease, revalidate_after_ms); -1 means a terminal snapshot of
        that key is never polled again.
        """
        batch = list(items)
        rows = await self.run_scripts(self._touch_calls(batch))
        return self._touch_results(batch, rows)

    def _touch_calls(self, batch: Sequence[Touch]) -> list[ScriptCall]:
        """The TOUCH script calls of ``batch`` (the touch listeners hear of its keys)."""
        if not batch:
            return []
        if self.touch_listeners:
            names = [key for key, _, _ in batch]
            for listener in self.touch_listeners:
                listener(names)
        return [
            ScriptCall(
                self._touch,
                [keys.watch(key), keys.lease(key), keys.fence(key), keys.snapshot(key)],
                [self.linger_ms, self.owner, self.lease_ttl_ms, 1 if want else 0, reval_ms],
            )
            for key, want, reval_ms in batch
        ]

    @staticmethod
    def _touch_results(batch: Sequence[Touch], rows: Sequence[Any]) -> list[TouchResult]:
        """The answers of ``_touch_calls(batch)``, in order."""
        return [
            TouchResult(key, int(r[0]), int(r[1]), int(r[2]), text(r[3]))
            for (key, _, _), r in zip(batch, rows, strict=True)
        ]

    async def renew_many(self, tokens: dict[str, str]) -> set[str]:
        """Extend our leases; return the keys whose lease we no longer hold."""
        if not tokens:
            return set()
        names = list(tokens)
        rows = await self.run_scripts(
            [
                ScriptCall(self._renew, [keys.lease(key)], [tokens[key], self.lease_ttl_ms])
                for key in names
            ]
        )
        return {key for key, ok in zip(names, rows, strict=True) if not int(ok)}

    async def release(self, key: str, token: str) -> None:
        """Hand a lease back (a no-op when it is no longer ours)."""
        await self.call(lambda: self._release(keys=[keys.lease(key)], args=[token]))

    async def release_many(self, tokens: dict[str, str]) -> None:
        """Hand several leases back in one round trip (shutdown)."""
        if not tokens:
            return
        await self.run_scripts(
            [ScriptCall(self._release, [keys.lease(key)], [token]) for key, token in tokens.items()]
        )

    async def is_watched(self, key: str) -> bool:
        """True while somebody, on any replica, watches ``key``."""
        return bool(await self.call(lambda: self.redis.exists(keys.watch(key))))
