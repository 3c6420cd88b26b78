"""The per-key rate limit PiAPI enforces, emulated with a sliding window of real time.

Real time, not the emulated clock: a client's retry loop sleeps in real seconds, so a limit
on the emulated clock would expire instantly at a high `time_scale` and test nothing.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from klingflow.emulator.config import RateLimit

__all__ = ["RateWindows"]


@dataclass
class RateWindows:
    """The recent requests of each key, oldest first."""

    _windows: dict[str, deque[float]] = field(default_factory=dict)

    def retry_after(self, key: str, limit: RateLimit | None) -> int | None:
        """Seconds to wait (for Retry-After) when the key is over its window, else None.

        A request let through is counted; a refused one is not.
        """
        if limit is None:
            return None
        now = time.monotonic()
        window = self._windows.setdefault(key, deque())
        while window and window[0] <= now - limit.window_seconds:
            window.popleft()
        if len(window) >= limit.requests:
            return max(1, int(window[0] + limit.window_seconds - now + 0.999))
        window.append(now)
        return None
