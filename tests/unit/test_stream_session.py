"""The fan-out room without HTTP: a StreamSession on a fake sink, the hub's ticker and timers."""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from proxy.clock import ManualClock
from proxy.errors import NotFound, UpstreamTimeout
from proxy.resources import JOB, PROGRESS, ResourceRef
from proxy.services.cache import Listener, SnapshotCache
from proxy.services.stats import Stats
from proxy.snapshot import Snapshot
from proxy.streaming import Outcome, StreamHub, StreamSession
from proxy.streaming.frames import EXPIRED_MESSAGE

pytestmark = pytest.mark.timeout(20)

A = ResourceRef(PROGRESS, "cnt_00000000-0000-4000-8000-00000000000a")
B = ResourceRef(PROGRESS, "cnt_00000000-0000-4000-8000-00000000000b")
C = ResourceRef(JOB, "job_01J0000000000000000000000C")


class FakeFeed:
    """A real SnapshotCache; watch/unwatch counted per (key, tenant) like interest holds."""

    def __init__(self) -> None:
        self.cache = SnapshotCache()
        self.held: Counter[tuple[str, str]] = Counter()

    def latest(self, key: str) -> Snapshot | None:
        return self.cache.get(key)

    def watch(self, ref: ResourceRef, tenant: str, listener: Listener) -> None:
        self.cache.listen(ref.key, listener)
        self.held[(ref.key, tenant)] += 1

    def unwatch(self, ref: ResourceRef, tenant: str, listener: Listener) -> None:
        self.cache.unlisten(ref.key, listener)
        self.held[(ref.key, tenant)] -= 1

    def holding(self) -> dict[str, int]:
        return {key: n for (key, _), n in self.held.items() if n}


class FakeSink:
    """Records bytes; ``direct`` allows the fast path; ``gate`` holds task writes back."""

    def __init__(self, *, direct: bool = True) -> None:
        self.data = bytearray()
        self.direct = direct
        self.gate = asyncio.Event()
        self.gate.set()
        self.aborted = False
        self.task_writes = 0
        self.direct_writes = 0
        self.blocked = 0  # task writes waiting at the gate now
        self.ended: list[Outcome | None] = []  # what run told end, once per run

    async def send(self, data: bytes) -> None:
        self.blocked += 1
        try:
            await self.gate.wait()
        finally:
            self.blocked -= 1
        self.data += data
        self.task_writes += 1

    def send_now(self, data: bytes) -> bool:
        if not self.direct:
            return False
        self.data += data
        self.direct_writes += 1
        return True

    def abort(self) -> None:
        self.aborted = True

    async def end(self, outcome: Outcome | None) -> None:
        self.ended.append(outcome)

    def frames(self) -> list[dict[str, Any]]:
        """Every frame, parsed: its fields, data decoded as JSON."""
        out = []
        for raw in bytes(self.data).split(b"\n\n"):
            if not raw:
                continue
            frame: dict[str, Any] = {}
            for line in raw.decode().split("\n"):
                name, _, value = line.partition(": ")
                frame[name] = orjson.loads(value) if name == "data" else value
            out.append(frame)
        return out

    def events(self) -> list[dict[str, Any]]:
        return [f for f in self.frames() if "event" in f]


def snap(ref: ResourceRef, version: int, *, terminal: bool = False, code: int = 200) -> Snapshot:
    body = orjson.dumps(
        {ref.kind.id_field: ref.id, "status": "completed" if terminal else "running", "v": version}
    )
    return Snapshot(key=ref.key, version=version, body=body, status_code=code, terminal=terminal)


async def until(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait for ``cond`` (checked every few ms); fail after timeout_s."""
    async with asyncio.timeout(timeout_s):
        while not cond():  # noqa: ASYNC110 (a condition on plain state, polled)
            await asyncio.sleep(0.002)


def make(
    *, single: bool = False, hub: StreamHub | None = None, **kwargs: Any
) -> tuple[FakeFeed, StreamHub, Stats, StreamSession]:
    feed, stats = FakeFeed(), Stats()
    hub = StreamHub(heartbeat_s=15) if hub is None else hub
    session = StreamSession(
        feed, hub, stats, tenant="acme", single=single, request_id="req_stream", **kwargs
    )
    return feed, hub, stats, session


async def test_single_stream_writes_each_version_inside_notify_and_ends_at_terminal() -> None:
    """First state at once; later versions written in the cache's put (no task switch)."""
    feed, hub, stats, session = make(single=True)
    sink = FakeSink()
    feed.cache.put(snap(A, 1))
    session.add(A, feed.cache.get(A.key))
    task = asyncio.create_task(session.run(sink))
    await until(lambda: len(sink.events()) == 1)
    assert sink.frames()[0]["retry"] and stats.streams_open == 1
    assert feed.holding() == {A.key: 1} and hub.open_count == 1
    feed.cache.put(snap(A, 2))
    assert [e["id"] for e in sink.events()] == ["1", "2"]  # written before put returned
    feed.cache.put(snap(A, 2))  # same version: nothing
    feed.cache.put(snap(A, 3, terminal=True))
    assert await task is Outcome.DONE
    events = sink.events()
    assert [e["id"] for e in events] == ["1", "2", "3"] and events[-1]["data"]["status"] == (
        "completed"
    )
    assert sink.direct_writes == 2 and stats.stream_events == 3 and stats.streams_open == 0
    assert feed.holding() == {} and hub.open_count == 0


async def test_a_slow_reader_skips_intermediate_versions() -> None:
    """While a write is stuck, new versions replace each other: the reader gets the newest."""
    feed, _, _, session = make(single=True)
    sink = FakeSink(direct=False)
    feed.cache.put(snap(A, 1))
    session.add(A, feed.cache.get(A.key))
    task = asyncio.create_task(session.run(sink))
    await until(lambda: len(sink.events()) == 1)
    sink.gate.clear()
    feed.cache.put(snap(A, 2))
    await until(lambda: sink.blocked == 1)  # writing v2, stuck
    for version in (3, 4, 5):
        feed.cache.put(snap(A, version))
    sink.gate.set()
    await until(lambda: len(sink.events()) == 3)
    assert [e["id"] for e in sink.events()] == ["1", "2", "5"]
    feed.cache.put(snap(A, 6, terminal=True))
    assert await task is Outcome.DONE


async def test_resources_and_named_events_change_while_the_stream_runs() -> None:
    """A project-like stream: resources join and leave, ``event: container`` frames in order,
    vector ids over the resources watched now, and it stays open when all are done."""
    feed, hub, _, session = make(end_when_done=False)
    sink = FakeSink()
    feed.cache.put(snap(A, 3))
    session.add(A, feed.cache.get(A.key))
    task = asyncio.create_task(session.run(sink))
    await until(lambda: len(sink.events()) == 1)

    session.send_event("container", orjson.dumps({"containerId": B.id, "status": "running"}))
    feed.cache.put(snap(B, 7))
    session.add(B, feed.cache.get(B.key))
    await until(lambda: len(sink.events()) == 3)
    container, b_first = sink.events()[1:]
    assert container == {"event": "container", "data": {"containerId": B.id, "status": "running"}}
    assert b_first["event"] == "progress" and b_first["id"] == "3.7"
    assert session.keys == [A.key, B.key] and feed.holding() == {A.key: 1, B.key: 1}

    feed.cache.put(snap(A, 4))
    assert sink.events()[-1]["id"] == "4.7"
    session.remove(A)
    session.send_event("container", orjson.dumps({"containerId": A.id, "status": "completed"}))
    feed.cache.put(snap(A, 5))  # no longer watched: nothing about it
    feed.cache.put(snap(B, 8))
    await until(lambda: len(sink.events()) == 6)
    gone, b_next = sink.events()[4:]
    assert gone["event"] == "container" and gone["data"]["containerId"] == A.id
    assert b_next["id"] == "8" and b_next["data"]["v"] == 8
    assert feed.holding() == {B.key: 1}

    session.add(C)  # nothing cached yet: its first snapshot goes out when it arrives
    session.send_event("container", orjson.dumps({"containerId": C.id, "status": "running"}))
    await until(lambda: len(sink.events()) == 7)
    assert feed.holding() == {B.key: 1, C.key: 1}
    feed.cache.put(snap(C, 2, terminal=True))
    feed.cache.put(snap(B, 9, terminal=True))
    await until(lambda: len(sink.events()) == 9)
    last_two = [(e["event"], e["id"]) for e in sink.events()[7:]]
    assert last_two == [("job", "8.2"), ("progress", "9.2")]
    assert not task.done()  # every resource is done, but a project stream stays open
    assert await hub.close_all(retry_ms=400) == 1
    assert await task is Outcome.SHUTDOWN
    assert "retry" in sink.frames()[-1] and feed.holding() == {}


async def test_resume_skips_what_the_client_has() -> None:
    """Known terminal versions leave nothing to send; an in-flight one is sent again."""
    _, _, _, session = make()
    session.add(A, snap(A, 4, terminal=True))
    session.add(B, snap(B, 6, terminal=True))
    session.resume([4, 6])
    assert session.finished  # the edge answers 204
    feed, _, _, again = make()
    feed.cache.put(snap(A, 4))
    again.add(A, feed.cache.get(A.key))
    again.add(B, snap(B, 6, terminal=True))
    again.resume([4, 6])
    assert not again.finished
    sink = FakeSink()
    task = asyncio.create_task(again.run(sink))
    await until(lambda: len(sink.events()) == 1)
    assert sink.events()[0]["id"] == "4.6"
    feed.cache.put(snap(A, 5, terminal=True))
    assert await task is Outcome.DONE


async def test_error_states_become_error_events() -> None:
    """4xx first states end that resource; a 5xx keeps watching; a later 404 ends it too."""
    feed, _, _, session = make(new_request_id=lambda: "req_item")
    sink = FakeSink()
    session.add(A, NotFound(f"containerId {A.id} was not found."))
    session.add(B, UpstreamTimeout("The Layers API did not answer in time."))
    session.add(C, snap(C, 1))
    task = asyncio.create_task(session.run(sink))
    await until(lambda: len(sink.events()) == 3)
    a_err, b_err, _ = sink.events()
    assert a_err == {
        "event": "error",
        "data": {
            "containerId": A.id,
            "error": {
                "code": "NOT_FOUND",
                "message": f"containerId {A.id} was not found.",
                "requestId": "req_item",
                "details": {},
            },
        },
    }
    assert b_err["data"]["error"]["code"] == "UPSTREAM_TIMEOUT" and "id" not in b_err
    feed.cache.put(snap(B, 2))  # the upstream healed
    await until(lambda: len(sink.events()) == 4)
    assert sink.events()[-1]["id"] == "0.2.1"
    feed.cache.put(snap(B, 3, terminal=True))
    feed.cache.put(snap(C, 2, code=404))
    assert await task is Outcome.DONE
    assert sink.events()[-1]["event"] == "error" and sink.events()[-1]["data"]["jobId"] == C.id


async def test_token_expiry_ends_the_stream_and_nothing_goes_out_after_exp() -> None:
    """Past exp, a change is not written (even before the timer fires): TOKEN_EXPIRED is."""
    clock = ManualClock()
    feed, _, _, session = make(
        single=True, hub=StreamHub(15, wall=clock.wall), expires_at=clock.wall() + 10
    )
    sink = FakeSink()
    feed.cache.put(snap(A, 1))
    session.add(A, feed.cache.get(A.key))
    task = asyncio.create_task(session.run(sink))
    await until(lambda: len(sink.events()) == 1)
    clock.advance(9.5)
    feed.cache.put(snap(A, 2))
    assert sink.events()[-1]["id"] == "2"
    clock.advance(0.5)  # exp, the timer has not fired (it runs on the real loop clock)
    feed.cache.put(snap(A, 3))
    assert await task is Outcome.EXPIRED
    events = sink.events()
    assert [e.get("id") for e in events] == ["1", "2", None]
    assert events[-1] == {
        "event": "error",
        "data": {
            "error": {
                "code": "TOKEN_EXPIRED",
                "message": EXPIRED_MESSAGE,
                "requestId": "req_stream",
            }
        },
    }
    assert feed.holding() == {}


async def test_the_hub_expires_due_streams_only() -> None:
    """expire_due tells the streams whose exp passed; a long token keeps streaming."""
    clock = ManualClock()
    hub = StreamHub(15, wall=clock.wall)
    feed = FakeFeed()
    stats = Stats()
    feed.cache.put(snap(A, 1))
    short = StreamSession(feed, hub, stats, single=True, expires_at=clock.wall() + 3)
    long = StreamSession(feed, hub, stats, single=True, expires_at=clock.wall() + 600)
    sinks = [FakeSink(), FakeSink()]
    tasks = []
    for session, sink in zip((short, long), sinks, strict=True):
        session.add(A, feed.cache.get(A.key))
        tasks.append(asyncio.create_task(session.run(sink)))
    await until(lambda: all(len(s.events()) == 1 for s in sinks))
    clock.advance(2.5)
    assert hub.expire_due() == 0
    clock.advance(0.5)
    assert hub.expire_due() == 1
    assert await tasks[0] is Outcome.EXPIRED
    feed.cache.put(snap(A, 2))
    assert [e["id"] for e in sinks[1].events()] == ["1", "2"] and not tasks[1].done()
    assert hub.open_count == 1 and hub.expiry_backlog() == 1
    long.close()
    assert await tasks[1] is Outcome.SHUTDOWN


async def test_a_stream_opened_past_exp_sends_only_token_expired() -> None:
    """No retry hint, no snapshot: the one frame is the error."""
    clock = ManualClock()
    _, _, _, session = make(hub=StreamHub(15, wall=clock.wall), expires_at=clock.wall())
    sink = FakeSink()
    session.add(A, snap(A, 1))
    assert await session.run(sink) is Outcome.EXPIRED
    assert [f.get("event") for f in sink.frames()] == ["error"]
    assert sink.frames()[0]["data"]["error"]["code"] == "TOKEN_EXPIRED"


async def test_the_expiry_timer_fires_at_exp_on_the_real_clock() -> None:
    """One timer for the earliest exp: streams end in exp order, each within 1 s of it."""
    hub = StreamHub(15)
    runner = asyncio.create_task(hub.run())
    feed, stats = FakeFeed(), Stats()
    start = time.time()
    ends: dict[int, float] = {}

    def ended(i: int, _: object) -> None:
        ends[i] = time.time()

    sessions = []
    for i, ttl in enumerate((0.6, 0.3, 60.0)):
        session = StreamSession(feed, hub, stats, single=True, expires_at=start + ttl)
        session.add(A, snap(A, 1))
        task = asyncio.create_task(session.run(FakeSink()))
        task.add_done_callback(functools.partial(ended, i))
        sessions.append(task)
    await asyncio.wait(sessions[:2], timeout=5)
    assert 0.3 <= ends[1] - start < 1.3 and 0.6 <= ends[0] - start < 1.6
    assert ends[1] < ends[0] and not sessions[2].done()
    assert all(t.result() is Outcome.EXPIRED for t in sessions[:2])
    assert await hub.close_all() == 1
    runner.cancel()


async def test_ended_streams_do_not_pile_up_in_the_expiry_heap() -> None:
    """Streams that end long before their exp are pruned from the heap."""
    hub = StreamHub(15)
    feed, stats = FakeFeed(), Stats()
    for _ in range(300):
        session = StreamSession(feed, hub, stats, expires_at=time.time() + 3600)
        session.add(A, snap(A, 1, terminal=True))
        assert await session.run(FakeSink()) is Outcome.DONE
    assert hub.open_count == 0 and hub.expiry_backlog() <= 64


async def test_quiet_streams_get_a_heartbeat() -> None:
    """tick() asks streams silent for heartbeat_s for a comment; busy ones are left alone."""
    _, hub, _, session = make(single=True)
    sink = FakeSink()
    session.add(A, snap(A, 1))
    task = asyncio.create_task(session.run(sink))
    await until(lambda: len(sink.events()) == 1)
    now = asyncio.get_running_loop().time()
    hub.tick(now)
    hub.tick(now + 16)
    await until(lambda: bytes(sink.data).endswith(b": hb\n\n"))
    assert bytes(sink.data).count(b": hb") == 1
    session.close()
    assert await task is Outcome.SHUTDOWN


async def test_close_all_ends_every_stream_with_a_retry_hint() -> None:
    """Open streams and one that opens during shutdown all end with a short retry frame."""
    feed, hub = FakeFeed(), StreamHub(heartbeat_s=15)
    sinks = [FakeSink() for _ in range(4)]
    sessions = [StreamSession(feed, hub, Stats(), single=True) for _ in sinks]
    for session in sessions:
        session.add(A, snap(A, 1))
    tasks = [asyncio.create_task(s.run(k)) for s, k in zip(sessions[:3], sinks, strict=False)]
    await until(lambda: all(len(s.events()) == 1 for s in sinks[:3]))
    assert await hub.close_all(retry_ms=400, timeout_s=1.0) == 3 and hub.open_count == 0
    feed.cache.put(snap(A, 2))  # after the last frame: no fast-path write
    assert await sessions[3].run(sinks[3]) is Outcome.SHUTDOWN  # opened after close_all
    assert await asyncio.gather(*tasks) == [Outcome.SHUTDOWN] * 3
    hints = [int(s.frames()[-1]["retry"]) for s in sinks]
    assert len(hints) == 4 and all(400 <= h <= 800 for h in hints)
    assert all(len(s.events()) == 1 for s in sinks)


async def test_close_all_aborts_streams_that_cannot_take_the_frame() -> None:
    """A stream stuck on a write is cut after the timeout, so shutdown is not held up."""
    feed, hub, _, session = make(single=True)
    sink = FakeSink(direct=False)
    session.add(A, snap(A, 1))
    task = asyncio.create_task(session.run(sink))
    await until(lambda: len(sink.events()) == 1)
    sink.gate.clear()  # the reader stopped reading
    feed.cache.put(snap(A, 2))
    await until(lambda: sink.blocked == 1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await hub.close_all(timeout_s=0.2) == 1
    assert sink.aborted and 0.15 <= loop.time() - started < 1.0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert feed.holding() == {} and hub.open_count == 0
