"""Failed sign-ins and wrong bearer tokens, counted per client, so a token cannot be guessed.

After `MAX_FAILED_ATTEMPTS` failures within `FAILED_ATTEMPTS_WINDOW_SECONDS`, a client gets
429 (with `Retry-After`) for every sign-in or token until the oldest failure leaves the
window, even with the right token: a guesser learns nothing more. A success clears the
client's count. The counts live in this process's memory.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from fastapi import HTTPException, Request

__all__ = [
    "FAILED_ATTEMPTS_WINDOW_SECONDS",
    "MAX_FAILED_ATTEMPTS",
    "FailedAttempts",
    "failed_attempts",
]

MAX_FAILED_ATTEMPTS = 10
FAILED_ATTEMPTS_WINDOW_SECONDS = 60.0
_MAX_CLIENTS = 10_000  # clients remembered at once; the oldest are forgotten first


class FailedAttempts:
    """Failure times per client (an IP address), in a sliding window."""

    def __init__(
        self,
        *,
        limit: int = MAX_FAILED_ATTEMPTS,
        window_seconds: float = FAILED_ATTEMPTS_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_seconds = window_seconds
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, client: str) -> deque[float]:
        times = self._failures.get(client, deque())
        cutoff = self.clock() - self.window_seconds
        while times and times[0] <= cutoff:
            times.popleft()
        return times

    def check(self, client: str) -> None:
        """429 when the client is over the limit."""
        times = self._recent(client)
        if len(times) >= self.limit:
            wait = max(1, math.ceil(times[0] + self.window_seconds - self.clock()))
            raise HTTPException(
                status_code=429,
                detail=f"too many failed sign-ins or wrong tokens: try again in {wait} s",
                headers={"Retry-After": str(wait)},
            )

    def failed(self, client: str) -> None:
        """Count a failed sign-in or wrong token from `client` (past the cap of clients
        tracked, the oldest is forgotten)."""
        times = self._recent(client)
        times.append(self.clock())
        self._failures[client] = times
        if len(self._failures) > _MAX_CLIENTS:
            self._failures.pop(next(iter(self._failures)))

    def succeeded(self, client: str) -> None:
        """Forget `client`'s failures: it proved it has the token."""
        self._failures.pop(client, None)


def failed_attempts(request: Request) -> tuple[FailedAttempts, str]:
    """The app's counter and this request's client key."""
    state = request.app.state
    try:
        counter: FailedAttempts = state.failed_attempts
    except AttributeError:
        counter = state.failed_attempts = FailedAttempts()
    client = request.client.host if request.client else "unknown"
    return counter, client
