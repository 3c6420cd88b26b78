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
├── WebhookVerificationError(ValueError)  wrong or missing secret, malformed body
└── WorkflowError                       a workflow file or run went wrong (klingflow.workflows)
    ├── WorkflowDefinitionError(ValueError)  the file broke the schema or a rule; .problems
    │                                   (each WorkflowProblem names file, line, node id, field);
    │                                   .path .line .node_id of the first one
    ├── WorkflowInputError(InvalidRequestError)  the trigger payload does not fit `inputs:`;
    │                                   .problems as (inputs.<name>, rule); the run never started
    ├── TemplateError                   undefined name or bad expression in {{ }}; .node_id .field
    ├── BudgetExceededError             a submission would exceed budget_usd; nothing was sent
    ├── HTTPNodeError                   an http.request / ai.chat call failed; .status_code
    ├── LoopItemsFailedError            some loop items failed; .failed .partial_output
    ├── RecordedError                   an error replayed from a checkpoint; .info
    ├── RunNotFoundError(LookupError)   no run with that id in this database; .run_id
    ├── WorkflowNotFoundError(LookupError)  no published workflow of that name; .name
    ├── RunStateError                   the run's status does not allow the command
    │                                   (retry a run that is not paused); .run_id .status
    ├── RunLogWriteError                the run database refused a write (disk full, read
    │                                   only): runs stay where they were; .reason
    └── IdempotencyConflictError        a key reused with another body (409); .run_id
```

Each class says through `retryable` whether trying the same call again can help; retry
policies read that flag instead of guessing from status codes. A create POST is never retried
on `retryable` alone: see `SubmitUncertainError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import httpx

    from klingflow.piapi.models import Task

__all__ = [
    "APIStatusError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "DownloadError",
    "HTTPNodeError",
    "IdempotencyConflictError",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "KlingflowError",
    "LoopItemsFailedError",
    "PermissionDeniedError",
    "PiAPIConnectionError",
    "PiAPIError",
    "PiAPITimeoutError",
    "Problem",
    "RateLimitError",
    "RecordedError",
    "RunLogWriteError",
    "RunNotFoundError",
    "RunStateError",
    "ServerError",
    "SubmitUncertainError",
    "TaskFailedError",
    "TaskNotFoundError",
    "TemplateError",
    "UnexpectedResponseError",
    "WaitTimeoutError",
    "WebhookVerificationError",
    "WorkflowDefinitionError",
    "WorkflowError",
    "WorkflowInputError",
    "WorkflowNotFoundError",
    "WorkflowProblem",
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

    def __init__(
        self, message: str, *, url: str, retryable: bool = True, task_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.url = url
        self.retryable = retryable  # type: ignore[misc]  # per instance: a 404 is final
        self.task_id = task_id  # the paid task whose output this is, when known


class WebhookVerificationError(KlingflowError, ValueError):
    """A webhook delivery had a missing or wrong secret, or a malformed body."""


class WorkflowError(KlingflowError):
    """A workflow definition or run went wrong (see `klingflow.workflows`)."""


@dataclass(frozen=True)
class WorkflowProblem:
    """One broken rule in a workflow file, located as precisely as the source allows.

    `path` is the file as the caller named it (None for text), `line` is 1-based (None when
    unknown, e.g. for JSON that YAML could not re-read), `field` is dotted within the node
    (`with.duration`) or the file (`inputs.prompt.type`).
    """

    message: str
    path: str | None = None
    line: int | None = None
    node_id: str | None = None
    field: str = ""

    def __str__(self) -> str:
        where = self.path or "<workflow>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        if self.node_id is not None:
            where = f"{where} (node {self.node_id!r})"
        field = f"{self.field}: " if self.field else ""
        return f"{where}: {field}{self.message}"


class WorkflowDefinitionError(WorkflowError, ValueError):
    """A workflow file is not valid; `problems` lists every problem found, one per line.

    `path`, `line` and `node_id` repeat the first problem's, for callers that show one.
    Retrying cannot help: fix the file.
    """

    def __init__(self, problems: list[WorkflowProblem]) -> None:
        if not problems:
            raise ValueError("a WorkflowDefinitionError needs at least one problem")
        self.problems = list(problems)
        first = self.problems[0]
        self.path = first.path
        self.line = first.line
        self.node_id = first.node_id
        super().__init__("\n".join(str(problem) for problem in self.problems))


class WorkflowInputError(WorkflowError, InvalidRequestError):
    """The trigger payload does not fit the workflow's `inputs:`; the run was not started.

    An `InvalidRequestError` too (nothing was sent, nothing was spent), with `problems` as
    `(inputs.<name>, rule)` pairs.
    """

    def __init__(self, problems: list[Problem], *, workflow_name: str = "") -> None:
        self.problems = list(problems)
        self.workflow_name = workflow_name
        lines = "; ".join(f"{field}: {rule}" for field, rule in self.problems)
        name = f" for workflow {workflow_name!r}" if workflow_name else ""
        Exception.__init__(self, f"invalid inputs{name}, the run was not started: {lines}")


class TemplateError(WorkflowError):
    """A `{{ }}` template could not be rendered: an undefined name, a bad expression, or an
    access the sandbox refuses. Names the node and the parameter; the original error is chained.
    """

    def __init__(self, message: str, *, node_id: str | None, field: str) -> None:
        where = f"node {node_id!r} {field}" if node_id else field
        super().__init__(f"{where}: {message}")
        self.node_id = node_id
        self.field = field
        self.reason = message


class BudgetExceededError(WorkflowError):
    """A submission's estimate would take the run past its `budget_usd`; nothing was sent."""

    def __init__(self, message: str, *, estimated_usd: Decimal, budget_usd: Decimal) -> None:
        super().__init__(message)
        self.estimated_usd = estimated_usd
        self.budget_usd = budget_usd


class HTTPNodeError(WorkflowError):
    """An `http.request` or `ai.chat` call failed; 429, 5xx and no answer are retryable."""

    def __init__(self, message: str, *, status_code: int | None, retryable: bool) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retryable = retryable  # type: ignore[misc]  # per instance: a 404 is final


class LoopItemsFailedError(WorkflowError):
    """Some items of a loop failed after their attempts; the others' results are kept.

    `failed` is keyed by the 0-based item index (as in node paths, `each[2].video`); the
    message counts items from 1, as `loop.number` and the downloaded file names do.
    `partial_output` is the loop's output (None for each failed item), read from the run
    log as it is used.
    """

    def __init__(
        self,
        loop_id: str,
        *,
        failed: dict[int, dict[str, Any]],
        total: int,
        partial_output: Sequence[Any],
    ) -> None:
        first = failed[min(failed)]
        super().__init__(
            f"{len(failed)} of {total} items of loop {loop_id!r} failed; first, item "
            f"{min(failed) + 1} of {total} at {first.get('node_path')}: {first.get('message')}"
        )
        self.loop_id = loop_id
        self.failed = failed
        self.partial_output = partial_output


class RecordedError(WorkflowError):
    """An error replayed from a checkpoint: `info` is the run log's record of the original."""

    def __init__(self, info: dict[str, Any]) -> None:
        super().__init__(str(info.get("message", "")))
        self.info = info
        self.retryable = bool(info.get("retryable"))  # type: ignore[misc]


class RunNotFoundError(WorkflowError, LookupError):
    """No run has this id in the run database the process is using."""

    def __init__(self, run_id: str, *, where: str | None = None) -> None:
        super().__init__(f"no run {run_id}" + (f" in {where}" if where else ""))
        self.run_id = run_id


class WorkflowNotFoundError(WorkflowError, LookupError):
    """No workflow of this name is published (`klingflow publish`, `POST /api/workflows`)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no published workflow {name!r}")
        self.name = name


class RunStateError(WorkflowError):
    """The run's status does not allow the command (nothing was changed)."""

    def __init__(self, message: str, *, run_id: str, status: str) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.status = status


class RunLogWriteError(WorkflowError):
    """The run database refused a write (its disk is full, it is read only, it is gone):
    a run cannot record its progress, so waiting for it would wait for ever. Nothing is lost:
    its work up to the last record stands, paid tasks keep their ids, and `klingflow worker`
    on the repaired database resumes the run (DBOS recovers it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"the run database refused a write ({reason}): the runs stop where they were. "
            "Free space (or fix the database), then run `klingflow worker` on it: they resume "
            "from their last record, and nothing paid is paid again"
        )
        self.reason = reason


class IdempotencyConflictError(WorkflowError):
    """An idempotency key came back with a different body: answering with the key's run
    would hide that this request was never started (HTTP 409); nothing was started."""

    def __init__(self, message: str, *, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id
