"""The injectable clock: monotonic seconds for scheduling, wall seconds for headers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol


class Clock(Protocol):
    """What the services read time from, so tests can advance it instead of sleeping."""

    def monotonic(self) -> float: ...

    def wall(self) -> float: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


@dataclass
class ManualClock:
    """A clock tests move by hand."""

    mono: float = 1000.0
    wall_offset: float = field(default=1_800_000_000.0)

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> float:
        return self.wall_offset + self.mono

    def advance(self, seconds: float) -> None:
        self.mono += seconds
