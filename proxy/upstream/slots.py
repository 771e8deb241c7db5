"""Connection slots: two pools, so upstream requests that hang cannot starve healthy ones.

A resource whose last poll failed (timed out, hung, refused) draws from the small ``failing``
pool; every other resource from the ``healthy`` pool. With 160 hung resources the failing pool
is full and they wait, while healthy resources keep their own connections.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Slot:
    """One held connection slot; ``release()`` it, or leave its ``with`` block, when done."""

    __slots__ = ("_pools", "_released", "failing")

    def __init__(self, pools: SlotPools, failing: bool) -> None:
        self._pools = pools
        self._released = False
        self.failing = failing

    def release(self) -> None:
        """Give the slot back (idempotent)."""
        if not self._released:
            self._released = True
            self._pools._give_back(self.failing)

    def __enter__(self) -> Slot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class SlotPools:
    """The healthy and the failing pool of connection slots."""

    def __init__(self, *, healthy: int, failing: int) -> None:
        if healthy < 1 or failing < 1:
            raise ValueError("each pool needs at least one slot")
        self.capacity = healthy + failing
        self._sizes = {False: healthy, True: failing}
        self._held = {False: 0, True: 0}
        self._pools = {False: asyncio.Semaphore(healthy), True: asyncio.Semaphore(failing)}

    @classmethod
    def split(cls, max_connections: int, failing_connections: int) -> SlotPools:
        """``failing_connections`` for failing resources, the rest (at least one) for healthy."""
        return cls(
            healthy=max(1, max_connections - failing_connections), failing=failing_connections
        )

    def free(self, *, failing: bool) -> int:
        """How many slots of one pool are not held."""
        return self._sizes[failing] - self._held[failing]

    async def acquire(self, *, failing: bool, wait_s: float) -> Slot | None:
        """A slot from the pool, or None when none came free within ``wait_s`` seconds."""
        pool = self._pools[failing]
        try:
            async with asyncio.timeout(wait_s):
                await pool.acquire()
        except TimeoutError:
            return None
        self._held[failing] += 1
        return Slot(self, failing)

    def _give_back(self, failing: bool) -> None:
        self._held[failing] -= 1
        self._pools[failing].release()
