"""Fixtures for the simulator suite: a hand-moved clock, a seeded state, a served simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from proxy.simulator import ManualClock, RunningSimulator, SimulatorState, running_simulator


@pytest.fixture
def clock() -> ManualClock:
    """A clock the test advances by hand."""
    return ManualClock()


@pytest.fixture
def state(clock: ManualClock) -> SimulatorState:
    """A seeded simulator state on the manual clock."""
    return SimulatorState(clock=clock.monotonic, wall_clock=clock.wall, seed=1234)


@pytest.fixture
async def sim(state: SimulatorState) -> AsyncIterator[RunningSimulator]:
    """The state served on a free loopback port, with a fast webhook tick."""
    async with running_simulator(state, webhook_tick_s=0.01) as running:
        yield running


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session closed after the test."""
    async with aiohttp.ClientSession() as client:
        yield client
