"""Worker processes that hold thousands of raw connections and take orders over a pipe.

The benchmark process sends commands (open streams, open pollers, start recording, collect,
close) and gets one reply per command; each worker runs its own uvloop and can be pinned to CPUs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import multiprocessing as mp
import os
import random
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from bench.procfs import raise_nofile
from bench.raw_http import PollConnection, SseConnection, Tally

_OPEN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class WorkerSpec:
    """One worker's share: the connections it may open, in order."""

    host: str
    port: int
    targets: list[tuple[int, str]]  # (container index, path)
    cpus: frozenset[int] = frozenset()
    connect_concurrency: int = 100
    seed: int = 0


class _Worker:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.tally = Tally()
        self.streams: list[SseConnection] = []
        self.pollers: list[PollConnection] = []
        self.rng = random.Random(spec.seed)

    async def open_streams(self, n: int) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(self.spec.connect_concurrency)
        failed = 0

        async def one(cidx: int, path: str) -> bool:
            async with sem:
                try:
                    _, proto = await loop.create_connection(
                        lambda: SseConnection(path, cidx, self.tally),
                        self.spec.host,
                        self.spec.port,
                    )
                    self.streams.append(proto)
                    await asyncio.wait_for(proto.first_event, _OPEN_TIMEOUT_S)
                    return True
                except (OSError, TimeoutError) as exc:
                    self.tally.error("open_" + type(exc).__name__)
                    return False

        todo = self.spec.targets[len(self.streams) : n]
        results = await asyncio.gather(*(one(c, p) for c, p in todo))
        failed = sum(1 for ok in results if not ok)
        return {"open": sum(1 for s in self.streams if not s.closed), "failed": failed}

    async def open_pollers(self, n: int, interval_s: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        failed = 0
        for cidx, path in self.spec.targets[len(self.pollers) : n]:
            phase = self.rng.uniform(0, interval_s)
            try:
                factory = functools.partial(
                    PollConnection, path, cidx, self.tally, interval_s, phase
                )
                _, proto = await loop.create_connection(factory, self.spec.host, self.spec.port)
                self.pollers.append(proto)
            except OSError as exc:
                self.tally.error("open_" + type(exc).__name__)
                failed += 1
        return {"open": sum(1 for s in self.pollers if not s.closed), "failed": failed}

    def collect(self) -> dict[str, Any]:
        t = self.tally
        out = {
            "arrivals": t.arrivals,
            "updated": t.updated,
            "events": t.events,
            "heartbeats": t.heartbeats,
            "ok_200": t.ok_200,
            "not_modified": t.not_modified,
            "errors": t.errors,
            "open_streams": sum(1 for s in self.streams if not s.closed),
            "open_pollers": sum(1 for s in self.pollers if not s.closed),
        }
        t.reset(False)
        return out

    def close_all(self) -> None:
        conns: list[SseConnection | PollConnection] = [*self.streams, *self.pollers]
        for conn in conns:
            conn.close()
        self.streams, self.pollers = [], []

    async def handle(self, cmd: str, args: list[Any]) -> Any:
        if cmd == "open_streams":
            return await self.open_streams(int(args[0]))
        if cmd == "open_pollers":
            return await self.open_pollers(int(args[0]), float(args[1]))
        if cmd == "record":
            self.tally.reset(True)
            return "ok"
        if cmd == "collect":
            return self.collect()
        if cmd == "close":
            self.close_all()
            await asyncio.sleep(0.5)
            self.tally.reset(False)
            return "ok"
        raise ValueError(f"unknown command {cmd!r}")


async def _serve(spec: WorkerSpec, conn: Connection) -> None:
    worker = _Worker(spec)
    loop = asyncio.get_running_loop()
    while True:
        # A thread waits on the pipe: the loop's own reader would make the pipe non-blocking,
        # and a large reply would then fail to send.
        cmd, args = await loop.run_in_executor(None, conn.recv)
        if cmd == "exit":
            worker.close_all()
            return
        conn.send(await worker.handle(cmd, args))


def worker_main(spec: WorkerSpec, conn: Connection) -> None:
    """Process entry point."""
    raise_nofile()
    if spec.cpus:
        os.sched_setaffinity(0, set(spec.cpus) & os.sched_getaffinity(0) or os.sched_getaffinity(0))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve(spec, conn))


class Pool:
    """The benchmark's side: start workers, broadcast a command, gather the replies."""

    def __init__(self, specs: list[WorkerSpec]) -> None:
        ctx = mp.get_context("spawn")
        self._workers: list[tuple[BaseProcess, Connection]] = []
        for spec in specs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(spec, child), daemon=True)
            proc.start()
            self._workers.append((proc, parent))

    def __len__(self) -> int:
        return len(self._workers)

    @property
    def pids(self) -> list[int]:
        """The workers' process ids (to read their CPU time)."""
        return [proc.pid for proc, _ in self._workers if proc.pid is not None]

    def call(self, cmd: str, *args: Any) -> list[Any]:
        """Send ``cmd`` to every worker and wait for every reply."""
        return self.call_each(cmd, [list(args)] * len(self._workers))

    def call_each(self, cmd: str, args: list[list[Any]]) -> list[Any]:
        """Send ``cmd`` with per-worker arguments and wait for every reply."""
        for (_, conn), own in zip(self._workers, args, strict=True):
            conn.send((cmd, own))
        return [conn.recv() for _, conn in self._workers]

    def close(self) -> None:
        """Stop the workers."""
        for proc, conn in self._workers:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(("exit", []))
            proc.join(10)
            if proc.is_alive():
                proc.kill()
