"""Clocks the simulator can run on: a hand-moved one for tests, a sped-up one for demos."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from proxy.simulator.timeline import DEFAULT_EPOCH_S


@dataclass
class ManualClock:
    """A clock tests move by hand; pass ``clock=c.monotonic, wall_clock=c.wall``."""

    mono: float = 1000.0
    wall_at_zero: float = DEFAULT_EPOCH_S - 1000.0

    def monotonic(self) -> float:
        """Monotonic seconds."""
        return self.mono

    def wall(self) -> float:
        """Unix seconds, moving in step with ``monotonic``."""
        return self.wall_at_zero + self.mono

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self.mono += seconds


@dataclass
class ScaledClock:
    """Real time sped up by ``speed``, so demos can run long timelines quickly."""

    speed: float = 1.0
    mono0: float = field(default_factory=time.monotonic, init=False)
    wall0: float = field(default_factory=time.time, init=False)

    def monotonic(self) -> float:
        """Scaled monotonic seconds."""
        return self.mono0 + (time.monotonic() - self.mono0) * self.speed

    def wall(self) -> float:
        """Scaled Unix seconds, starting at the real time of creation."""
        return self.wall0 + (time.monotonic() - self.mono0) * self.speed
