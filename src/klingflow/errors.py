"""Every exception klingflow raises, in one tree.

```
KlingflowError                          base for everything we raise
├── InvalidRequestError(ValueError)     rejected locally; nothing was sent, nothing was spent
├── PiAPIError                          talking to PiAPI failed
│   ├── PiAPIConnectionError            no HTTP response (connect/read/write)
│   │   ├── PiAPITimeoutError
│   │   └── SubmitUncertainError        the create POST may have reached PiAPI: never resent
│   ├── APIStatusError                  HTTP non-2xx, or an envelope code not in {0, 200}
│   │   ├── BadRequestError             400
│   │   ├── AuthenticationError         401
│   │   ├── InsufficientCreditsError    402, or "credit not enough" / "quota not enough"
│   │   ├── PermissionDeniedError       403
│   │   ├── TaskNotFoundError           404
│   │   ├── RateLimitError              429 (.retry_after_seconds)
│   │   └── ServerError                 5xx
│   ├── UnexpectedResponseError         the body did not match the documented shape
│   ├── TaskFailedError                 the task reached `failed`; .task carries .error
│   ├── WaitTimeoutError                the deadline passed: resume the task, don't resubmit
│   └── DownloadError                   an output could not be fetched or failed its checks
└── WebhookVerificationError(ValueError)  wrong or missing secret, malformed body
```

Each class says through `retryable` whether trying the same call again can help; retry
policies read that flag instead of guessing from status codes. A create POST is never retried
on `retryable` alone: see `SubmitUncertainError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import httpx

    from klingflow.piapi.models import Task

__all__ = [
    "APIStatusError",
    "AuthenticationError",
    "BadRequestError",
    "DownloadError",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "KlingflowError",
    "PermissionDeniedError",
    "PiAPIConnectionError",
    "PiAPIError",
    "PiAPITimeoutError",
    "Problem",
    "RateLimitError",
    "ServerError",
    "SubmitUncertainError",
    "TaskFailedError",
    "TaskNotFoundError",
    "UnexpectedResponseError",
    "WaitTimeoutError",
    "WebhookVerificationError",
]

Problem = tuple[str, str]
"""A validation problem: (field path such as ``input.duration``, the rule it broke)."""


class KlingflowError(Exception):
    """Base of every error klingflow raises on purpose (never of programming mistakes)."""

    retryable: ClassVar[bool] = False


class InvalidRequestError(KlingflowError, ValueError):
    """A request broke a documented rule; it was rejected before anything was sent or spent."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        lines = "; ".join(f"{field}: {rule}" for field, rule in self.problems)
        super().__init__(f"invalid request, nothing was sent: {lines}")


class PiAPIError(KlingflowError):
    """Talking to PiAPI failed."""


class PiAPIConnectionError(PiAPIError):
    """No HTTP response arrived (connect, read or write failed)."""

    retryable = True

    def __init__(self, message: str, *, request: httpx.Request | None = None) -> None:
        super().__init__(message)
        self.request = request


class PiAPITimeoutError(PiAPIConnectionError):
    """The request timed out before a response arrived."""


class SubmitUncertainError(PiAPIConnectionError):
    """A create request may have reached PiAPI, so the task may exist and may be charged.

    Never resend blindly: reconcile first (look for the task, wait for its webhook) using
    `intent_id`, which the client also put into the webhook URL when it had one.
    """

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        intent_id: str,
        request: httpx.Request | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message, request=request)
        self.intent_id = intent_id
        self.status_code = status_code


class APIStatusError(PiAPIError):
    """PiAPI answered with an error: HTTP non-2xx, or an envelope `code` not in {0, 200}."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: int | None = None,
        api_message: str = "",
        response: httpx.Response | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.api_message = api_message
        self.response = response


class BadRequestError(APIStatusError):
    """PiAPI rejected the request as invalid (400)."""


class AuthenticationError(APIStatusError):
    """The API key is missing or wrong (401)."""


class InsufficientCreditsError(APIStatusError):
    """The account has no credits left for this task (402 or a "credit not enough" message)."""


class PermissionDeniedError(APIStatusError):
    """The key's plan does not allow this request (403)."""


class TaskNotFoundError(APIStatusError):
    """No task with that id exists for this key (404)."""


class RateLimitError(APIStatusError):
    """Too many requests or tasks for the account (429); wait `retry_after_seconds`."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: int | None = None,
        api_message: str = "",
        response: httpx.Response | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(
            message, status_code=status_code, code=code, api_message=api_message, response=response
        )
        self.retry_after_seconds = retry_after_seconds


class ServerError(APIStatusError):
    """PiAPI failed on its side (5xx)."""

    retryable = True


class UnexpectedResponseError(PiAPIError):
    """A response did not have the documented shape; the pydantic error is chained."""


class TaskFailedError(PiAPIError):
    """The task ended `failed` (or was cancelled); `task.error` holds PiAPI's reason."""

    def __init__(self, task: Task) -> None:
        reason = task.error.summary() or "no reason given"
        super().__init__(f"task {task.task_id} failed: {reason}")
        self.task = task


class WaitTimeoutError(PiAPIError):
    """The wait deadline passed while the task was still running.

    The task goes on (and is paid for): resume waiting on `task_id`, never resubmit.
    """

    retryable = True

    def __init__(self, task_id: str, *, last_status: str, waited_seconds: float) -> None:
        super().__init__(
            f"task {task_id} is still {last_status} after {waited_seconds:.0f} s; it keeps "
            f"running at PiAPI: resume with `klingflow task wait {task_id}`, do not resubmit"
        )
        self.task_id = task_id
        self.last_status = last_status
        self.waited_seconds = waited_seconds


class DownloadError(PiAPIError):
    """An output file could not be downloaded, or it failed its length/type/checksum checks."""

    retryable = True

    def __init__(self, message: str, *, url: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.url = url
        self.retryable = retryable  # type: ignore[misc]  # per instance: a 404 is final


class WebhookVerificationError(KlingflowError, ValueError):
    """A webhook delivery had a missing or wrong secret, or a malformed body."""
