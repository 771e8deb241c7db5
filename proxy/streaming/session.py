"""One client's stream: which resources it watches, what it has been sent, and when it ends.

Per resource the only state is the version last sent, so a slow reader skips intermediate
versions instead of growing a queue (latest wins). The cache calls ``notify``; when the socket
has nothing queued the frame is written right there (``Sink.send_now``, no task switch per
subscriber), else the session's task writes the newest state when it gets round to it.

Resources can be added and removed while the stream runs, and named events (``send_event``)
go out in order before the resource events of the same wake-up. The stream ends when every
resource is done (``end_when_done``), on shutdown (a short ``retry:``), or at the token's exp
(a final ``event: error`` TOKEN_EXPIRED; nothing is written at or after exp).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog

from proxy.errors import ProxyError
from proxy.logs import summary
from proxy.resources import ResourceRef
from proxy.services.stats import Stats
from proxy.snapshot import Snapshot
from proxy.streaming.frames import error_frame, expired_frame, single_frame, snapshot_frame
from proxy.streaming.hub import StreamHub
from proxy.streaming.ports import Feed, Outcome, Sink
from proxy.streaming.sse import HEARTBEAT, named_frame, retry_frame, vector_id
from proxy.tenancy.ownership import not_found

log = structlog.get_logger("proxy.streams")

# The shared empty "changed" set of every stream that has nothing waiting (never mutated).
_NOTHING_CHANGED: set[str] = set()


class _Slot:
    __slots__ = ("done", "first", "ref", "sent_version")

    def __init__(self, ref: ResourceRef, first: Snapshot | ProxyError | None) -> None:
        self.ref = ref
        self.first = first  # the state to send before any change (fetched by the caller)
        self.sent_version = 0
        self.done = False  # terminal (or gone) and already sent


class StreamSession:
    """One open stream: subscriptions, interest, latest-wins delivery, heartbeats, its end."""

    __slots__ = (
        "_changed",
        "_closing",
        "_expired",
        "_fast",
        "_feed",
        "_heartbeat_due",
        "_hub",
        "_live",
        "_loop",
        "_new_request_id",
        "_outbox",
        "_request_id",
        "_retry_ms",
        "_running",
        "_sink",
        "_slots",
        "_stats",
        "_waiter",
        "_woken",
        "end_when_done",
        "expires_at",
        "last_write",
        "single",
        "tenant",
    )

    def __init__(
        self,
        feed: Feed,
        hub: StreamHub,
        stats: Stats,
        *,
        tenant: str = "-",
        single: bool = False,
        expires_at: float | None = None,
        retry_ms: int = 3000,
        request_id: str = "",
        new_request_id: Callable[[], str] = lambda: "",
        end_when_done: bool = True,
    ) -> None:
        self._feed, self._hub, self._stats = feed, hub, stats
        self.tenant = tenant
        self.single = single  # one resource: the event id is its version, else a vector id
        self.expires_at = expires_at
        self.end_when_done = end_when_done
        self._retry_ms = retry_ms
        self._request_id = request_id  # the stream's own (TOKEN_EXPIRED names it)
        self._new_request_id = new_request_id  # per resource error event
        self._slots: dict[str, _Slot] = {}
        self._live = 0  # slots not done
        # Idle streams are most streams: what is only needed on a change is made on a change.
        self._changed: set[str] = _NOTHING_CHANGED  # replaced by a set at the first change
        self._outbox = b""  # named events waiting for the task
        self._woken = False
        self._waiter: asyncio.Future[None] | None = None  # the task's, while it waits
        self._sink: Sink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._fast = False  # notify may write straight to the sink
        self._closing = False
        self._expired = False
        self._heartbeat_due = False
        self.last_write = 0.0

    # -- what the edge and the project watcher call ------------------------------------------

    @property
    def keys(self) -> list[str]:
        """The watched resources' keys, in the order their versions appear in vector ids."""
        return list(self._slots)

    @property
    def finished(self) -> bool:
        """True when every resource is done: nothing would be sent (a resume then gets 204)."""
        return self.end_when_done and self._live == 0 and not self._outbox

    def add(self, ref: ResourceRef, first: Snapshot | ProxyError | None = None) -> None:
        """Watch ``ref`` too; ``first`` (if given) is sent first, else its next change is."""
        if ref.key in self._slots:
            return
        self._slots[ref.key] = _Slot(ref, first)
        self._live += 1
        if self._running:
            self._feed.watch(ref, self.tenant, self)
            self._mark_changed(ref.key)

    def remove(self, ref: ResourceRef) -> None:
        """Stop watching ``ref`` (nothing more is sent about it)."""
        slot = self._slots.pop(ref.key, None)
        if slot is None:
            return
        if not slot.done:
            self._live -= 1
        if ref.key in self._changed:
            self._changed.discard(ref.key)
        if self._running:
            self._feed.unwatch(ref, self.tenant, self)
            self._wake()  # the stream may have nothing left to watch

    def send_event(self, event: str, data: bytes) -> None:
        """Queue a named event without an id (e.g. ``event: container``), in call order."""
        self._outbox += named_frame(event, data)
        self._wake()

    def resume(self, known: Sequence[int] | None) -> None:
        """The client has these versions (Last-Event-ID, in slot order): skip what is terminal.

        The current state of a resource still in flight is sent again on connect.
        """
        if known is None:
            return
        for slot, version in zip(self._slots.values(), known, strict=False):
            first = slot.first
            if isinstance(first, Snapshot) and first.version == version:
                slot.sent_version = version
                if first.terminal:
                    self._mark_done(slot)

    async def run(self, sink: Sink) -> Outcome:
        """Serve the stream on ``sink`` until it ends; every subscription is released after,
        then ``sink.end`` is awaited (the HTTP edge ends its response there)."""
        self._sink, self._loop = sink, asyncio.get_running_loop()
        self._running = True
        self._stats.streams_open += 1
        for slot in self._slots.values():
            self._feed.watch(slot.ref, self.tenant, self)
        self._hub.add(self)
        outcome: Outcome | None = None
        try:
            await self._open()
            while not self._ending():
                if not self._woken:
                    # A bare future, not an asyncio.Event: an Event keeps a deque per stream.
                    self._waiter = self._loop.create_future()
                    try:
                        await self._waiter
                    finally:
                        self._waiter = None
                self._woken = False
                await self._step()
            outcome = await self._finish()
        except (ConnectionError, TimeoutError) as exc:
            log.debug("stream_closed", reason=type(exc).__name__)
            outcome = Outcome.LEFT
        except asyncio.CancelledError:
            log.debug("stream_closed", reason="CancelledError")
            raise
        except Exception:
            # A bug: past the head nothing can tell the client; one traceback per kind.
            if summary().admit("stream_failed"):
                log.exception("stream_failed", request_id=self._request_id)
            outcome = Outcome.FAILED
        finally:
            self._release()
            await sink.end(outcome)
        return outcome

    def _release(self) -> None:
        self._fast = self._running = False
        self._hub.discard(self)
        self._stats.streams_open -= 1
        for slot in self._slots.values():
            self._feed.unwatch(slot.ref, self.tenant, self)

    # -- what the hub and the cache call -----------------------------------------------------

    def notify(self, key: str) -> None:
        """``key`` changed (the cache calls this inside its put)."""
        if self._fast and not self._changed and not self._outbox and self._write_now(key):
            return
        self._mark_changed(key)

    def heartbeat(self) -> None:
        """Quiet for a heartbeat interval: write a comment unless something else goes out."""
        self._heartbeat_due = True
        self._wake()

    def expire(self) -> None:
        """The token reached its exp: end with TOKEN_EXPIRED."""
        self._expired = True
        self._fast = False
        self._wake()

    def close(self) -> None:
        """The replica shuts down: end with a short retry hint."""
        self._closing = True
        self._fast = False  # no more fast-path writes: the task writes the last frame
        self._wake()

    def abort(self) -> None:
        """Drop the connection."""
        if self._sink is not None:
            self._sink.abort()

    # -- internals ---------------------------------------------------------------------------

    def _wake(self) -> None:
        self._woken = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _mark_changed(self, key: str) -> None:
        if self._changed is _NOTHING_CHANGED:
            self._changed = {key}
        else:
            self._changed.add(key)
        self._wake()

    def _past_exp(self) -> bool:
        if self.expires_at is not None and self._hub.wall() >= self.expires_at:
            self._expired = True
            self._fast = False
        return self._expired

    def _ending(self) -> bool:
        return self._closing or self._past_exp() or self.finished

    def _mark_done(self, slot: _Slot) -> None:
        if not slot.done:
            slot.done = True
            self._live -= 1

    def _frame(self, slot: _Slot, snap: Snapshot) -> bytes:
        """The event for ``snap`` (no state changes: ``_commit`` does that once it is sent)."""
        if self.single:
            return single_frame(slot.ref, snap)
        versions = [snap.version if s is slot else s.sent_version for s in self._slots.values()]
        return snapshot_frame(slot.ref, snap, vector_id(versions))

    def _commit(self, slot: _Slot, snap: Snapshot) -> None:
        slot.sent_version = snap.version
        if snap.terminal:
            self._mark_done(slot)

    def _write_now(self, key: str) -> bool:
        """The fan-out fast path; False leaves ``key`` to the task (errors, 404s, a busy socket).

        It runs once per watching stream inside one put, so it calls as little as it can.
        """
        slot = self._slots.get(key)
        if slot is None or slot.done or slot.first is not None:
            return False
        snap = self._feed.latest(key)
        # _servable, inlined: one call less per stream is measurable in bench fanout.
        if snap is None or snap.status_code != 200 or not snap.body:
            return False
        if snap.version <= slot.sent_version:
            return True
        if self.expires_at is not None and self._past_exp():
            return False  # the task ends the stream; nothing goes out at or after exp
        sink, loop = self._sink, self._loop
        if sink is None or loop is None:
            return False
        frame = single_frame(slot.ref, snap) if self.single else self._frame(slot, snap)
        if not sink.send_now(frame):
            return False
        self._commit(slot, snap)
        self._stats.stream_events += 1
        self.last_write = loop.time()
        if snap.terminal and self.finished:
            self._wake()  # the task ends the stream
        return True

    def _render(self, slot: _Slot) -> bytes:
        """What to send about ``slot`` now: its first state, else its newest unsent version."""
        first, slot.first = slot.first, None
        if isinstance(first, ProxyError):
            if first.status < 500:
                self._mark_done(slot)  # 4xx is final; upstream 5xx may heal, so keep watching
            return self._error_sent(slot, first)
        if slot.done:
            return b""
        current = self._feed.latest(slot.ref.key)
        if first is not None:
            if current is not None and current.version > first.version:
                if _servable(current):
                    first = current  # the cache has moved on since the fetch
                else:
                    self._mark_changed(slot.ref.key)  # sent after the first state, below
            self._commit(slot, first)
            return self._frame_sent(slot, first)
        if current is None or current.version <= slot.sent_version:
            return b""
        if current.status_code == 404:
            self._mark_done(slot)
            gone = not_found(slot.ref)  # the same code and words as a poll's 404
            return self._error_sent(slot, gone)
        if not current.has_body:
            return b""  # an error-only record: keep the last state, wait for data
        self._commit(slot, current)
        return self._frame_sent(slot, current)

    def _error_sent(self, slot: _Slot, exc: ProxyError) -> bytes:
        self._stats.stream_events += 1
        return error_frame(slot.ref, exc, self._new_request_id())

    def _frame_sent(self, slot: _Slot, snap: Snapshot) -> bytes:
        # Rendered after the commit: a vector id already holds this slot's new version.
        self._stats.stream_events += 1
        return self._frame(slot, snap)

    async def _send(self, data: bytes) -> None:
        assert self._sink is not None and self._loop is not None
        await self._sink.send(data)
        self.last_write = self._loop.time()

    async def _open(self) -> None:
        if self._past_exp():
            return  # already expired: the only frame is TOKEN_EXPIRED
        out = bytearray(retry_frame(self._retry_ms))
        out += self._outbox
        self._outbox = b""
        for slot in self._slots.values():
            out += self._render(slot)
        await self._send(bytes(out))
        self._fast = not (self._closing or self._expired)

    async def _step(self) -> None:
        if self._ending():
            return
        changed, self._changed = self._changed, _NOTHING_CHANGED
        out = bytearray(self._outbox)
        self._outbox = b""
        for slot in list(self._slots.values()):  # in slot order, as in the vector ids
            if slot.ref.key in changed:
                out += self._render(slot)
        if self._heartbeat_due and not out:
            out += HEARTBEAT
        self._heartbeat_due = False
        if out:
            await self._send(bytes(out))
        self._fast = not (self._closing or self._expired)

    async def _finish(self) -> Outcome:
        if self._expired:
            await self._send(expired_frame(self._request_id))
            return Outcome.EXPIRED
        if self._closing:
            # Tell the client to come back soon (elsewhere); the edge then ends the connection.
            await self._send(retry_frame(self._hub.shutdown_retry_ms))
            return Outcome.SHUTDOWN
        return Outcome.DONE


def _servable(snap: Snapshot) -> bool:
    return snap.has_body and snap.status_code == 200
