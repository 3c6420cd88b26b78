"""Failed sign-ins and wrong bearer tokens, counted per client, so a token cannot be guessed.

After `MAX_FAILED_ATTEMPTS` failures within `FAILED_ATTEMPTS_WINDOW_SECONDS`, a client gets
429 (with `Retry-After`) for every sign-in or token until the oldest failure leaves the
window, even with the right token: a guesser learns nothing more. A success clears the
client's count. The counts live in the run log's database (`SessionLog`), shared by every
`serve` process on it and kept across restarts.
"""

from __future__ import annotations

import math

from fastapi import HTTPException, Request

from klingflow.service.session_log import SessionLog

__all__ = [
    "FAILED_ATTEMPTS_WINDOW_SECONDS",
    "MAX_FAILED_ATTEMPTS",
    "FailedAttempts",
    "failed_attempts",
]

MAX_FAILED_ATTEMPTS = 10
FAILED_ATTEMPTS_WINDOW_SECONDS = 60.0


class FailedAttempts:
    """Failure times per client (an IP address) in a sliding window, kept in the run log's
    database (`SessionLog`), so every `serve` process on it counts together and a restart
    forgets nothing."""

    def __init__(
        self,
        log: SessionLog,
        *,
        limit: int = MAX_FAILED_ATTEMPTS,
        window_seconds: float = FAILED_ATTEMPTS_WINDOW_SECONDS,
    ) -> None:
        self.log = log
        self.limit = limit
        self.window_seconds = window_seconds

    def check(self, client: str) -> None:
        """429 when the client is over the limit."""
        now = self.log.clock()
        times = self.log.failures(client, since=now - self.window_seconds)
        if len(times) >= self.limit:
            wait = max(1, math.ceil(times[0] + self.window_seconds - now))
            raise HTTPException(
                status_code=429,
                detail=f"too many failed sign-ins or wrong tokens: try again in {wait} s",
                headers={"Retry-After": str(wait)},
            )

    def failed(self, client: str) -> None:
        """Count a failed sign-in or wrong token from `client` (failures past every
        client's window are dropped on the way)."""
        self.log.add_failure(client, forget_before=self.log.clock() - self.window_seconds)

    def succeeded(self, client: str) -> None:
        """Forget `client`'s failures: it proved it has the token."""
        self.log.clear_failures(client)


def failed_attempts(request: Request) -> tuple[FailedAttempts, str]:
    """The app's counter (over `app.state.session_log`) and this request's client key."""
    state = request.app.state
    try:
        counter: FailedAttempts = state.failed_attempts
    except AttributeError:
        counter = state.failed_attempts = FailedAttempts(state.session_log)
    client = request.client.host if request.client else "unknown"
    return counter, client
