"""How a faulted request misbehaves on the wire: resets, hangs, garbage and cut bodies."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

from aiohttp import web

from proxy.simulator.state import SimulatorState

GARBAGE_BODY = b"<html><body>502 oops</body></html>"
HANG_MAX_S = 300.0
HANG_POLL_S = 0.05


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


async def hang(request: web.BaseRequest, state: SimulatorState) -> bool:
    """Hold the request until the client leaves, faults are cleared or the server stops.

    Returns True when the client is still connected. Polling (not an Event) keeps this free of
    loop-bound objects on the state, and cancellation simply ends the sleep.
    """
    epoch = state.hang_epoch
    # Real time on purpose: a hang is about the client's socket timeout, not scripted time.
    deadline = time.monotonic() + HANG_MAX_S
    while time.monotonic() < deadline and state.hang_epoch == epoch:
        if request.transport is None or request.transport.is_closing():
            return False
        await asyncio.sleep(HANG_POLL_S)
    return request.transport is not None and not request.transport.is_closing()


def truncate(response: web.Response) -> None:
    """Cut a response body in half, leaving a 200 with broken JSON."""
    body = response.body
    if isinstance(body, bytes | bytearray):
        response.body = bytes(body[: len(body) // 2])
