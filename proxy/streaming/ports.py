"""What a stream session is connected to: where snapshots come from, where its bytes go, and
why it ended (the edge and the services provide these; nothing here knows HTTP)."""

from __future__ import annotations

import enum
from typing import Protocol

from proxy.resources import ResourceRef
from proxy.services.cache import Listener
from proxy.snapshot import Snapshot


class Feed(Protocol):
    """Where snapshots come from (``Watching`` is one)."""

    def latest(self, key: str) -> Snapshot | None: ...

    def watch(self, ref: ResourceRef, tenant: str, listener: Listener) -> None: ...

    def unwatch(self, ref: ResourceRef, tenant: str, listener: Listener) -> None: ...


class Sink(Protocol):
    """Where the stream's bytes go (the HTTP edge frames them for its connection)."""

    async def send(self, data: bytes) -> None:
        """Write ``data``; ConnectionError or TimeoutError when the client left or stalled."""

    def send_now(self, data: bytes) -> bool:
        """Write ``data`` at once when nothing is queued before it; False to leave it to send."""

    def abort(self) -> None:
        """Drop the connection (a reader that stopped reading during shutdown)."""

    async def end(self, outcome: Outcome | None) -> None:
        """The stream is over (None: cancelled, the client is gone); ``run`` calls it last."""


class Outcome(enum.Enum):
    """Why ``run`` returned."""

    DONE = "done"  # every resource ended (or was removed)
    SHUTDOWN = "shutdown"  # the replica stops; the client was told to come back soon
    EXPIRED = "expired"  # the token reached its exp; the client was told TOKEN_EXPIRED
    LEFT = "left"  # the client went away or stopped reading
    FAILED = "failed"  # a bug: nothing more can be said past the head, the connection drops
