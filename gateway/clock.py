"""Injectable clocks, so TTLs, windows and reset timeouts are tested without sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
"""A clock is any callable returning the current time in (fractional) epoch seconds."""

system_clock: Clock = time.time


class FakeClock:
    """A clock that only moves when a test calls :meth:`advance`."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self.now += seconds
