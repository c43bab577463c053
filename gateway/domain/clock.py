"""Time, injected: the alarm core never reads the system clock itself."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never jumps; for timers (grace, debounce, heartbeats)."""
        ...

    def time(self) -> float:
        """Wall-clock Unix seconds; for timestamps people read. May jump (a Pi has no RTC)."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


class FakeClock:
    """A clock that moves only when told to: for tests and scenario replays."""

    def __init__(self, start_wall: float = 1_764_000_000.0, start_monotonic: float = 1000.0) -> None:
        self._wall = start_wall
        self._mono = start_monotonic

    def monotonic(self) -> float:
        return self._mono

    def time(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not run backwards")
        self._mono += seconds
        self._wall += seconds
