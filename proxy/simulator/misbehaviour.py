"""How a faulted request misbehaves: resets, hangs, stalls, drips, and distorted bodies."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from proxy.simulator.ids import new_uuid, ulid
from proxy.simulator.state import SimulatorState
from proxy.simulator.timeline import ContainerScript, container_at, job_at, plan_of, progress_at

GARBAGE_BODY = b"<html><body>502 oops</body></html>"
HANG_MAX_S = 300.0
HANG_POLL_S = 0.05
# What missing_fields drops, per kind: the id field, and for progress what a bar needs.
MISSING_FIELDS = {
    "progress": ("containerId", "stage", "stageProgress"),
    "job": ("jobId",),
    "container": ("id",),
}


def reset_connection(request: web.BaseRequest) -> None:
    """Abort the TCP connection with an RST, so the client sees a reset and no response."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0 turns close() into an RST instead of a graceful FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _connected(request: web.BaseRequest) -> bool:
    return request.transport is not None and not request.transport.is_closing()


async def hang(request: web.BaseRequest, state: SimulatorState) -> bool:
    """Hold the request until the client leaves, faults are cleared or the server stops.

    Returns True when the client is still connected. Polling (not an Event) keeps this free of
    loop-bound objects on the state, and cancellation simply ends the sleep.
    """
    epoch = state.hang_epoch
    # Real time on purpose: a hang is about the client's socket timeout, not scripted time.
    deadline = time.monotonic() + HANG_MAX_S
    while time.monotonic() < deadline and state.hang_epoch == epoch:
        if not _connected(request):
            return False
        await asyncio.sleep(HANG_POLL_S)
    return _connected(request)


async def stall(request: web.BaseRequest, state: SimulatorState) -> None:
    """Hold the request like ``hang``, then close the connection without ever answering."""
    await hang(request, state)
    if request.transport is not None:
        request.transport.close()


async def drip(
    request: web.BaseRequest, response: web.Response, state: SimulatorState, interval_s: float
) -> web.StreamResponse:
    """Send ``response`` with its headers at once and its body one byte every ``interval_s``.

    Clearing faults (or stopping the server) sends the rest at once. A client that leaves
    mid-body ends the drip.
    """
    body = response.body if isinstance(response.body, bytes) else b""
    stream = web.StreamResponse(status=response.status, headers=response.headers)
    stream.content_length = len(body)
    await stream.prepare(request)
    epoch = state.hang_epoch
    try:
        for at in range(len(body)):
            if state.hang_epoch != epoch:
                await stream.write(body[at:])
                break
            await stream.write(body[at : at + 1])
            await asyncio.sleep(interval_s)
        await stream.write_eof()
    except ConnectionResetError:
        pass  # the client left; the headers (a 200) were already sent
    return stream


def truncate(response: web.Response) -> None:
    """Cut a response body in half, leaving a 200 with broken JSON."""
    body = response.body
    if isinstance(body, bytes | bytearray):
        response.body = bytes(body[: len(body) // 2])


def foreign_body(kind: str, state: SimulatorState) -> dict[str, Any] | None:
    """A completed body of a resource nobody asked for, under its own fresh id.

    None for kinds without an id (whoami).
    """
    script = ContainerScript()
    end_s = plan_of(script).end_s
    started = state.wall_clock() - end_s
    cid = "cnt_" + new_uuid(state.id_rng)
    if kind == "progress":
        return progress_at(script, end_s, container_id=cid, started_wall=started)
    if kind == "container":
        return container_at(script, end_s, container_id=cid, created_wall=started)
    if kind == "job":
        job_id = "job_" + ulid(state.id_rng, state.wall_clock())
        return job_at(script, end_s, job_id=job_id, container_id=cid, started_wall=started)
    return None


def without_fields(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` minus the fields ``missing_fields`` drops for ``kind``."""
    dropped = MISSING_FIELDS.get(kind, ())
    return {name: value for name, value in body.items() if name not in dropped}


def padded(body: dict[str, Any], size_bytes: int) -> dict[str, Any]:
    """``body`` plus a ``padding`` field making it ``size_bytes`` long (or as short as it gets)."""
    bare = len(orjson.dumps({**body, "padding": ""}))
    return {**body, "padding": "x" * max(0, size_bytes - bare)}


def reflected(kind: str, body: dict[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
    """``body`` plus the request's headers, as a careless gateway might echo them."""
    # Header names are case-insensitive str subclasses, which orjson refuses as keys.
    out = {**body, "echo": {str(name): value for name, value in headers.items()}}
    if kind == "container":
        auth = headers.get("Authorization", "")
        previous = body.get("lastError") or {}
        code = previous.get("code", "INTERNAL") if isinstance(previous, dict) else "INTERNAL"
        out["lastError"] = {"code": code, "message": f"Request was sent with Authorization: {auth}"}
    return out
