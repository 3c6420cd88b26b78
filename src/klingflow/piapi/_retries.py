"""When to try a PiAPI request again, and how long to wait first (sans-I/O).

The decision depends on what the request does, never on the status code alone:

- reads (GET) and cancels are retried on connection errors, timeouts, 429, 5xx and unreadable
  answers;
- the create POST, which spends money, is retried only when PiAPI provably did not accept it:
  the connection could not be opened (nothing was sent), or PiAPI answered 429. Everything
  else (a read timeout, a dropped connection, a 5xx) arrives here already translated into
  `SubmitUncertainError`, which is never retried.

Waits grow exponentially with full jitter (a uniform draw below the cap, as in the AWS
"exponential backoff and jitter" analysis); a Retry-After from PiAPI replaces the draw.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from klingflow.errors import (
    PiAPIConnectionError,
    PiAPIError,
    RateLimitError,
    SubmitUncertainError,
    UnexpectedResponseError,
)
from klingflow.piapi._wire import RequestKind

__all__ = ["DEFAULT_RETRY_POLICY", "RetryPolicy", "retry_delay"]


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How a client retries requests that are safe to retry.

    The n-th retry (n from 0) waits a uniform random time in
    `[0, min(max_delay_seconds, initial_delay_seconds * 2**n)]` (or exactly that cap with
    `jitter=False`). A Retry-After header is honoured as given, unless it asks for more than
    `max_retry_after_seconds`: then the error is raised at once, so the caller decides.
    Tests use tiny delays instead of patching time.
    """

    max_retries: int = 4
    initial_delay_seconds: float = 0.5
    max_delay_seconds: float = 30.0
    jitter: bool = True
    max_retry_after_seconds: float = 120.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.initial_delay_seconds < 0 or self.max_delay_seconds < 0:
            raise ValueError("delays must be >= 0 seconds")

    def backoff_seconds(self, retry_number: int, *, rng: random.Random | None = None) -> float:
        """The wait before retry `retry_number` (0 for the first retry), without Retry-After."""
        cap = min(self.max_delay_seconds, self.initial_delay_seconds * 2.0**retry_number)
        if not self.jitter:
            return cap
        return (rng or random).uniform(0.0, cap)


DEFAULT_RETRY_POLICY = RetryPolicy()


def retry_delay(
    kind: RequestKind,
    error: PiAPIError,
    *,
    retry_number: int,
    max_retries: int,
    policy: RetryPolicy,
) -> float | None:
    """Seconds to wait before retrying after `error`, or None to raise it.

    `retry_number` counts the retries already made (0 after the first attempt failed).
    """
    if retry_number >= max_retries:
        return None
    if kind is RequestKind.CREATE:
        # By construction, a connection error on a create that is not SubmitUncertainError
        # happened before any byte was sent (see _wire.transport_error).
        never_accepted = isinstance(error, RateLimitError) or (
            isinstance(error, PiAPIConnectionError) and not isinstance(error, SubmitUncertainError)
        )
        if not never_accepted:
            return None
    elif not (error.retryable or isinstance(error, UnexpectedResponseError)):
        return None
    if isinstance(error, RateLimitError) and error.retry_after_seconds is not None:
        if error.retry_after_seconds > policy.max_retry_after_seconds:
            return None
        return error.retry_after_seconds
    return policy.backoff_seconds(retry_number)
