"""Benchmark (issue 11): one snapshot to K idle streams, the proxy's path against bare writes.

In one process on uvloop, K loopback TCP connections are opened to a sink server that reads
and discards. Each round times, with the same frame on the same sockets:

* **bare**: a loop calling ``transport.write`` once per connection, the least any server that
  writes one event to K sockets can do;
* **proxy**: ``SnapshotCache.put`` of a new version, which tells the K ``StreamSession`` objects
  watching it, each of which renders (once per version, shared) and writes its frame through a
  sink that frames it as ``EventStream.send_now`` does (chunked);
* **proxy, no socket**: the same with a transport whose ``write`` does nothing, to show the
  proxy's own Python part.

Between rounds every byte is read, so no socket buffer fills; the receiving side is this process
too, so a fan-out here costs less than to clients in other processes (no wake-ups), for both
variants alike. The ratio proxy / bare is the median of the per-round ratios.

    python -m bench fanout --subscribers 1000 --rounds 40
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from typing import Any

from bench.report import Report, median, percentile
from proxy.resources import PROGRESS, ResourceRef
from proxy.services.cache import Listener, SnapshotCache
from proxy.services.stats import Stats
from proxy.snapshot import Snapshot
from proxy.streaming import Outcome, StreamHub, StreamSession
from proxy.streaming.frames import single_frame
from proxy.web.event_stream import frame_chunk

REF = ResourceRef(PROGRESS, "cnt_00000000-0000-4000-8000-0000000000f0")
QUIET = ResourceRef(PROGRESS, "cnt_00000000-0000-4000-8000-0000000000f1")
BODY = (
    b'{"containerId":"cnt_00000000-0000-4000-8000-0000000000f0","status":"processing",'
    b'"stage":"generating_visuals","stageProgress":0.42,"etaSeconds":31,'
    b'"updatedAt":"2026-12-03T12:00:00Z"}'
)


@dataclass(frozen=True)
class Params:
    """The knobs of one run."""

    subscribers: int = 1000
    rounds: int = 40


def add_arguments(p: argparse.ArgumentParser) -> None:
    """This benchmark's options."""
    p.add_argument("--subscribers", type=int, default=Params.subscribers, help="K streams")
    p.add_argument("--rounds", type=int, default=Params.rounds, help="timed fan-outs")
    p.add_argument("--quick", action="store_true", help="200 streams, 10 rounds")


def params_from(args: argparse.Namespace) -> Params:
    """Params from parsed options."""
    if args.quick:
        return Params(subscribers=200, rounds=10)
    return Params(subscribers=args.subscribers, rounds=args.rounds)


class _Discard(asyncio.Protocol):
    received = 0

    def data_received(self, data: bytes) -> None:
        _Discard.received += len(data)


class _Feed:
    def __init__(self, cache: SnapshotCache) -> None:
        self.cache = cache

    def latest(self, key: str) -> Snapshot | None:
        return self.cache.get(key)

    def watch(self, ref: ResourceRef, tenant: str, listener: Listener) -> None:
        self.cache.listen(ref.key, listener)

    def unwatch(self, ref: ResourceRef, tenant: str, listener: Listener) -> None:
        self.cache.unlisten(ref.key, listener)


class _NoSocket:
    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        return None


class _Sink:
    """``EventStream.send_now`` (chunked framing) on a given transport."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    async def send(self, data: bytes) -> None:
        self._transport.write(frame_chunk(data))

    def send_now(self, data: bytes) -> bool:
        transport = self._transport
        if transport.is_closing() or transport.get_write_buffer_size() > 0:
            return False
        transport.write(frame_chunk(data))
        return True

    def abort(self) -> None:
        return None

    async def end(self, outcome: Outcome | None) -> None:
        return None


async def _drain(expected: int) -> None:
    while _Discard.received < expected:  # noqa: ASYNC110 (a byte count, checked each ms)
        await asyncio.sleep(0.001)


def _chunk(snap: Snapshot) -> bytes:
    return frame_chunk(single_frame(REF, snap))


async def _measure(p: Params) -> dict[str, list[float]]:
    """Seconds per fan-out, per variant and round."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Discard, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    transports = []
    for _ in range(p.subscribers):
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        transports.append(transport)
    cache = SnapshotCache()
    feed, hub, stats = _Feed(cache), StreamHub(heartbeat_s=3600), Stats()
    # REF's sessions write to the sockets, QUIET's to no socket (the proxy's own part).
    first = Snapshot(key=REF.key, version=1, body=BODY, status_code=200)
    cache.put(first)
    cache.put(Snapshot(key=QUIET.key, version=1, body=BODY, status_code=200))
    tasks = []
    for ref, sinks in (
        (REF, [_Sink(t) for t in transports]),
        (QUIET, [_Sink(_NoSocket()) for _ in transports]),
    ):
        for sink in sinks:
            session = StreamSession(feed, hub, stats, single=True)
            session.add(ref)
            tasks.append(asyncio.create_task(session.run(sink)))
    await _drain(len(_chunk(first)) * p.subscribers)
    times: dict[str, list[float]] = {"bare": [], "proxy": [], "python_only": []}
    for version in range(2, p.rounds + 2):
        snap = Snapshot(key=REF.key, version=version, body=BODY, status_code=200)
        chunk = _chunk(snap)
        for variant in ("bare", "proxy"):
            await asyncio.sleep(0.02)
            expected = _Discard.received + len(chunk) * p.subscribers
            started = time.perf_counter()
            if variant == "bare":
                for transport in transports:
                    transport.write(chunk)
            else:
                cache.put(snap)
            times[variant].append(time.perf_counter() - started)
            await _drain(expected)
        quiet = Snapshot(key=QUIET.key, version=version, body=BODY, status_code=200)
        started = time.perf_counter()
        cache.put(quiet)
        times["python_only"].append(time.perf_counter() - started)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for transport in transports:
        transport.close()
    server.close()
    return times


def run(p: Params) -> Report:
    """Measure and build the report."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover (a dev dependency)
        uvloop = None
    runner = uvloop.run if uvloop is not None else asyncio.run
    times = runner(_measure(p))
    ratios = [pr / b for pr, b in zip(times["proxy"], times["bare"], strict=True)]
    report = Report(
        "fanout",
        "One snapshot to K idle streams: the proxy's path against bare writes, same sockets",
        {"subscribers": p.subscribers, "rounds": p.rounds, "loop": runner.__module__},
    )

    def per(variant: str) -> str:
        ms = [t * 1000 for t in times[variant]]
        each_us = median(ms) * 1000 / p.subscribers
        return f"{median(ms):.2f} ms (p90 {percentile(ms, 90):.2f}), {each_us:.2f} us each"

    report.add("bare: transport.write of the frame to every socket", per("bare"))
    report.add("proxy: SnapshotCache.put to the sessions on those sockets", per("proxy"))
    report.add("proxy on no socket (the proxy's own Python part)", per("python_only"))
    report.add("proxy / bare, median of rounds", f"{median(ratios):.3f}")
    report.data = {"times_s": times, "ratio": median(ratios)}
    return report
