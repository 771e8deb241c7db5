"""The per-key read-light budget: a sliding 60-second window of spent requests."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

WINDOW_S = 60.0


@dataclass(frozen=True)
class BudgetDecision:
    """The outcome of one spend (or peek) and the numbers the X-RateLimit headers show."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    retry_after_s: int


class SlidingWindowBudget:
    """Counts requests per key over the last ``window_s`` seconds of the injected clock."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._spent: dict[str, deque[float]] = {}

    def spend(self, key_id: str, limit: int, now: float) -> BudgetDecision:
        """Spend one request for ``key_id`` if the window has room; refusals spend nothing."""
        window = self._window(key_id, now)
        if len(window) < limit:
            window.append(now)
            return self._decision(window, limit, now, allowed=True)
        return self._decision(window, limit, now, allowed=False)

    def peek(self, key_id: str, limit: int, now: float) -> BudgetDecision:
        """Describe ``key_id``'s budget without spending (or remembering an unknown key)."""
        window = self._window(key_id, now) if key_id in self._spent else deque()
        return self._decision(window, limit, now, allowed=len(window) < limit)

    def clear(self) -> None:
        """Forget every spent request."""
        self._spent.clear()

    def _window(self, key_id: str, now: float) -> deque[float]:
        window = self._spent.setdefault(key_id, deque())
        while window and window[0] <= now - self.window_s:
            window.popleft()
        return window

    def _decision(
        self, window: deque[float], limit: int, now: float, *, allowed: bool
    ) -> BudgetDecision:
        # Seconds until the oldest spent slot leaves the window, i.e. until one frees; the
        # epsilon keeps float noise (60.0000000001) from rounding a whole second up.
        frees_in = math.ceil(window[0] + self.window_s - now - 1e-9) if window else 0
        return BudgetDecision(
            allowed=allowed,
            limit=limit,
            remaining=max(0, limit - len(window)),
            reset_s=max(0, frees_in),
            retry_after_s=max(1, frees_in),
        )
