"""L1: the latest snapshot of every resource this replica serves, and who waits for changes.

The hot path reads a dict; nothing here does I/O. Listeners are told "key changed", never sent
the data, so a slow consumer reads only the latest state when it gets round to it (latest wins).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol

from proxy.snapshot import Snapshot


class Listener(Protocol):
    """Something that wants to hear when a key's snapshot changes."""

    def notify(self, key: str) -> None: ...


class Waiter:
    """A one-shot listener that resolves a future (cold fetches, long-polls)."""

    def __init__(self, cache: SnapshotCache, accept: Callable[[Snapshot], bool]) -> None:
        self.future: asyncio.Future[Snapshot] = asyncio.get_running_loop().create_future()
        self.accept = accept
        self.cache = cache

    def notify(self, key: str) -> None:
        if self.future.done():
            return
        snap = self.cache.get(key)
        if snap is not None and self.accept(snap):
            self.future.set_result(snap)

    async def result(self, timeout_s: float) -> Snapshot | None:
        """The accepted snapshot, or None after ``timeout_s`` (the listener keeps listening)."""
        if not self.future.done():
            await asyncio.wait((self.future,), timeout=timeout_s)  # never cancels the future
        return self.future.result() if self.future.done() else None


class SnapshotCache:
    """Latest snapshot per key, with change listeners."""

    def __init__(self) -> None:
        self._entries: dict[str, Snapshot] = {}
        # Per key, listeners in the order they came (a dict, not a set): a fan-out walks them
        # in that order, so streams opened together, whose objects sit together, are written
        # together (bench fanout: 0.82-0.86 against 1.00-1.27 us of Python per stream).
        self._listeners: dict[str, dict[Listener, None]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Snapshot | None:
        """The snapshot for ``key``, if this replica has one."""
        return self._entries.get(key)

    def keys(self) -> list[str]:
        """Every cached key."""
        return list(self._entries)

    def put(self, snap: Snapshot) -> bool:
        """Keep ``snap`` if it is newer than what we have; tell listeners about real changes."""
        old = self._entries.get(snap.key)
        if old is not None:
            if snap.version < old.version:
                return False
            if (
                snap.version == old.version
                and snap.fetched_ms <= old.fetched_ms
                and snap.error_ms <= old.error_ms
                and snap.error == old.error
            ):
                return False
        self._entries[snap.key] = snap
        meaningful = (
            old is None
            or snap.version != old.version
            or (not snap.has_body and snap.error_ms != old.error_ms)
        )
        if meaningful:
            for listener in list(self._listeners.get(snap.key, ())):
                listener.notify(snap.key)
        return True

    def evict(self, key: str) -> None:
        """Forget ``key`` (nobody here watches it any more)."""
        self._entries.pop(key, None)

    def listen(self, key: str, listener: Listener) -> None:
        """Call ``listener.notify(key)`` on every change of ``key``."""
        self._listeners.setdefault(key, {})[listener] = None

    def unlisten(self, key: str, listener: Listener) -> None:
        """Stop notifying ``listener``."""
        listeners = self._listeners.get(key)
        if listeners is not None:
            listeners.pop(listener, None)
            if not listeners:
                del self._listeners[key]

    def has_listeners(self, key: str) -> bool:
        """True while anybody waits on ``key``."""
        return key in self._listeners

    @contextlib.contextmanager
    def waiting(self, key: str, accept: Callable[[Snapshot], bool]) -> Iterator[Waiter]:
        """Listen for the first snapshot of ``key`` that ``accept`` takes, for the whole block.

        Listening before the first read of Redis means a write announced meanwhile is re-read
        and reaches the waiter (the subscriber ignores news of keys nobody here waits for).
        """
        waiter = Waiter(self, accept)
        self.listen(key, waiter)
        try:
            waiter.notify(key)  # the current snapshot counts
            yield waiter
        finally:
            self.unlisten(key, waiter)

    async def wait_for(
        self, key: str, accept: Callable[[Snapshot], bool], timeout_s: float
    ) -> Snapshot | None:
        """The first snapshot of ``key`` that ``accept`` takes (the current one counts), or None."""
        with self.waiting(key, accept) as waiter:
            return await waiter.result(timeout_s)
