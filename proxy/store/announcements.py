"""What the pub/sub listeners hand their messages to, and how fast they reconnect."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

# Reconnect backoff of a listener that lost its connection (doubling, capped). Resubscribing
# after Redis comes back must not wait long: snapshots written meanwhile reach this replica
# only through the re-read that follows.
FIRST_BACKOFF_S = 0.1
MAX_BACKOFF_S = 1.0


class Announcements(Protocol):
    """What the listeners call back (the snapshot subscriber)."""

    def on_message(self, data: bytes) -> None:
        """A snapshot channel message ("key|version|fetched_ms|mode"; on a cluster pokes too)."""

    def on_poke(self, key: str) -> None:
        """A poke of ``key`` (one Redis: the poke channel)."""

    def missed(self, names: Iterable[str]) -> None:
        """Writes of ``names`` may have gone unheard (not listening then): read them again."""

    def cached_keys(self) -> Iterable[str]:
        """The keys this replica caches."""

    def extra_keys(self) -> Iterable[str]:
        """Keys to hear about although not cached (cluster: the leases this replica holds)."""
