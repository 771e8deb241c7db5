"""Snapshots in Redis: the fenced write (and its announcement), reads, pokes.

Every write goes through the WRITE script, which refuses a writer that no longer holds the lease
or holds an older fence, and announces the new state on the snapshot channel. The writer gets
the stored state back in the same reply, so it never reads its own write: ``writes_in_flight``
and ``write_listeners`` let the subscriber recognise its own announcement even when it arrives
before that reply.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from proxy.snapshot import Snapshot
from proxy.store import keys, scripts
from proxy.store.base import StoreBase

# Called when one of this replica's writes returns: (key, the stored state, or None when the
# write was fenced out or failed).
WriteListener = Callable[[str, Snapshot | None], None]


def _fields(flat: Sequence[Any]) -> dict[bytes, bytes]:
    """A flat HGETALL reply (from inside a script) as a dict."""
    if all(isinstance(v, bytes) for v in flat):
        it = iter(flat)
        return dict(zip(it, it, strict=True))
    out: dict[bytes, bytes] = {}
    for i in range(0, len(flat) - 1, 2):
        k, v = flat[i], flat[i + 1]
        out[k if isinstance(k, bytes) else str(k).encode()] = (
            v if isinstance(v, bytes) else str(v).encode()
        )
    return out


class SnapshotOps(StoreBase):
    """Fenced snapshot writes, snapshot reads and pokes."""

    def _setup(self) -> None:
        super()._setup()
        self._write = self.redis.register_script(
            scripts.WRITE_SHARDED if self.sharded else scripts.WRITE
        )
        self._poke_sharded = self.redis.register_script(scripts.POKE_SHARDED)
        # Keys with a write of this replica on its way (the count of them, usually 1).
        self.writes_in_flight: dict[str, int] = {}
        self.write_listeners: list[WriteListener] = []

    def snapshot_channel(self, key: str) -> str:
        """Where a write of ``key`` is announced: the one channel, or the key's shard channel."""
        return keys.channel(key) if self.sharded else keys.SNAPSHOT_CHANNEL

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
        return await self._fenced_write(
            key,
            token,
            fence,
            "data",
            body,
            etag,
            status_code,
            status,
            stage,
            1 if terminal else 0,
            upstream_etag,
            negative_ttl_ms,
            extra,
        )

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
        return await self._fenced_write(
            key, token, fence, "error", error, error_status, error_code, error_only_ttl_ms
        )

    async def _fenced_write(
        self, key: str, token: str, fence: int, mode: str, *fields: Any
    ) -> tuple[Snapshot | None, bool]:
        """The WRITE script (see scripts.WRITE for the fields of each mode)."""
        written: Snapshot | None = None
        self.writes_in_flight[key] = self.writes_in_flight.get(key, 0) + 1
        try:
            row = await self.call(
                lambda: self._write(
                    keys=[keys.lease(key), keys.snapshot(key), keys.version(key)],
                    args=[
                        token,
                        fence,
                        mode,
                        self.snapshot_ttl_ms,
                        self.snapshot_channel(key),
                        key,
                        *fields,
                    ],
                )
            )
            written, changed = self._written(key, row)
            return written, changed
        finally:
            left = self.writes_in_flight.pop(key) - 1
            if left:
                self.writes_in_flight[key] = left
            for listener in self.write_listeners:
                listener(key, written)

    @staticmethod
    def _written(key: str, row: Sequence[Any]) -> tuple[Snapshot | None, bool]:
        version, changed, flat = int(row[0]), int(row[1]), row[2]
        if version == 0 and not flat:
            return None, False
        return Snapshot.from_fields(key, _fields(flat)), bool(changed)

    async def read(self, key: str) -> Snapshot | None:
        """The stored snapshot, if any."""
        raw: dict[bytes, bytes] = await self.call(
            lambda: self.redis.hgetall(keys.snapshot(key))  # type: ignore[arg-type,return-value]
        )
        return Snapshot.from_fields(key, raw)

    async def read_many(self, names: Sequence[str]) -> list[Snapshot | None]:
        """Several stored snapshots in one round trip."""
        if not names:
            return []

        async def run() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in names:
                    pipe.hgetall(keys.snapshot(key))
                return await pipe.execute()

        rows = await self.call(run)
        return [Snapshot.from_fields(k, r) for k, r in zip(names, rows, strict=True)]

    async def poke(self, key: str) -> None:
        """Ask whichever replica holds ``key``'s lease to poll it now."""
        if self.sharded:
            message = f"{key}|0|0|{keys.POKE_MODE}"
            await self.call(lambda: self._poke_sharded(keys=[keys.channel(key)], args=[message]))
            return
        await self.call(lambda: self.redis.publish(keys.POKE_CHANNEL, key))
