"""Emulated time: a clock that can run faster than real time, and PiAPI's timestamp format.

A "90 s" Kling job must take milliseconds in tests without patching `time`: the speed is
configuration (`time_scale`), and the control API can jump the clock forward. Task
lifecycles and webhook deliveries both read this clock, so they stay in step.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["Clock", "format_time"]

ZERO_TIME = "0001-01-01T00:00:00Z"


def format_time(epoch_seconds: float | None) -> str:
    """RFC 3339 with nanoseconds in UTC, or Go's zero time when unset (as PiAPI sends)."""
    if epoch_seconds is None:
        return ZERO_TIME
    whole = int(epoch_seconds)
    nanos = round((epoch_seconds - whole) * 1e9)
    stamp = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{min(nanos, 999_999_999):09d}Z"


class Clock:
    """Emulated wall-clock time: starts at the real time, runs `time_scale` times faster."""

    def __init__(self, time_scale: float) -> None:
        self._scale = time_scale
        self._real_origin = time.monotonic()
        self._emulated_origin = time.time()

    @property
    def time_scale(self) -> float:
        """Emulated seconds per real second."""
        return self._scale

    def now(self) -> float:
        """The emulated time, in epoch seconds."""
        return self._emulated_origin + (time.monotonic() - self._real_origin) * self._scale

    def set_scale(self, time_scale: float) -> None:
        """Change the speed from now on; the time already passed is kept, so nothing jumps."""
        self._emulated_origin = self.now()
        self._real_origin = time.monotonic()
        self._scale = time_scale

    def advance(self, seconds: float) -> None:
        """Jump forward: everything due in the next `seconds` happens at once."""
        self._emulated_origin += seconds

    def real_seconds(self, emulated_seconds: float) -> float:
        """How long `emulated_seconds` take in real time, for sleeping until something is due."""
        return emulated_seconds / self._scale
