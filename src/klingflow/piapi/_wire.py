"""The sans-I/O core shared by `PiAPI` and `AsyncPiAPI`: what to send, and what came back.

Nothing here performs I/O. Both clients build a `RequestSpec`, send it their own way, and hand
the answer (or the httpx exception) back to this module, which turns it into data or into one
of our errors. That keeps the two clients identical in behaviour (httpx's `BaseClient` idea),
and keeps the error mapping in one place: `make_status_error` for answers, `transport_error`
for httpx exceptions. Every httpx object attached to an error is a redacted copy: the API key
never travels inside an exception.
"""

from __future__ import annotations

import enum
import json
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from pydantic import ValidationError

from klingflow.errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    InsufficientCreditsError,
    InvalidRequestError,
    PermissionDeniedError,
    PiAPIConnectionError,
    PiAPIError,
    PiAPITimeoutError,
    RateLimitError,
    ServerError,
    SubmitUncertainError,
    TaskNotFoundError,
    UnexpectedResponseError,
)
from klingflow.piapi.kling import KlingRequest, TaskConfig, WebhookConfig, parse_task_request
from klingflow.piapi.models import AccountInfo, ActiveTaskCounts, Task
from klingflow.redaction import MASK, mask_secrets

__all__ = [
    "API_KEY_HEADER",
    "DEFAULT_BASE_URL",
    "REDACTED",
    "RequestKind",
    "RequestSpec",
    "SubmitPlan",
    "account_spec",
    "active_tasks_spec",
    "cancel_spec",
    "get_spec",
    "make_status_error",
    "new_intent_id",
    "parse_account",
    "parse_active_tasks",
    "parse_retry_after",
    "parse_task",
    "plan_submit",
    "redact_request",
    "transport_error",
    "unwrap",
]

DEFAULT_BASE_URL = "https://api.piapi.ai"
API_KEY_HEADER = "x-api-key"
REDACTED = MASK  # one mask for users, everywhere: klingflow/redaction.py
SUCCESS_CODES = frozenset({0, 200})
# Texts PiAPI is reported to use when the balance cannot pay for a task (spec §6).
_CREDIT_MESSAGES = ("credit not enough", "quota not enough", "freeze credit", "insufficient credit")
_RATE_MESSAGES = ("rate limit", "too many requests")


class RequestKind(enum.Enum):
    """How a request may be retried: the risky choice is named, not guessed from the method."""

    READ = "read"
    """Safe to repeat (GET)."""
    CANCEL = "cancel"
    """Repeating it cannot cost money; a repeat may find the task already cancelled."""
    CREATE = "create"
    """Creates a paid task: repeated only when PiAPI provably did not accept it."""


@dataclass(frozen=True)
class RequestSpec:
    """One PiAPI call, before any I/O: method, path, body and how it may be retried."""

    method: str
    path: str
    kind: RequestKind
    json: Mapping[str, Any] | None = None
    params: Mapping[str, str] | None = None

    def describe(self) -> str:
        """`GET /api/v1/task/<id>`: how logs and errors name the request."""
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class SubmitPlan:
    """A validated create request: the typed request, the body to send and its intent id."""

    request: KlingRequest
    config: TaskConfig | None
    intent_id: str
    spec: RequestSpec


def new_intent_id() -> str:
    """A fresh intent id (uuid4 hex): names one attempt to create a paid task."""
    return uuid.uuid4().hex


def _task_path(task_id: str) -> str:
    if not isinstance(task_id, str):
        raise TypeError(f"task_id must be a str, not {type(task_id).__name__}")
    if not task_id.strip():
        raise InvalidRequestError([("task_id", "is required")])
    return "/api/v1/task/" + urllib.parse.quote(task_id, safe="")


def with_intent_id(endpoint: str, intent_id: str) -> str:
    """The webhook endpoint with `intent_id=<id>` set in its query (replacing any old one)."""
    parts = urllib.parse.urlsplit(endpoint)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "intent_id"]
    query.append(("intent_id", intent_id))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def plan_submit(
    request: KlingRequest | Mapping[str, Any],
    *,
    config: TaskConfig | None,
    webhook: WebhookConfig | None,
    intent_id: str | None,
) -> SubmitPlan:
    """Validate a create request and build its body; raise `InvalidRequestError` if it is bad.

    A raw body is checked by `kling.parse_task_request`, exactly as the emulator checks it.
    With a webhook, `intent_id` goes into the endpoint's query so a receiver can match a
    delivery to a submit whose response was lost.
    """
    if isinstance(request, KlingRequest):
        typed, body_config = request, None
    elif isinstance(request, Mapping):
        typed, body_config = parse_task_request(request)
    else:
        raise TypeError(
            f"request must be a KlingRequest or a dict body, not {type(request).__name__}"
        )
    if config is not None and body_config is not None:
        raise TypeError("pass the task config either in the body or as config=, not both")
    config = config or body_config
    if webhook is not None:
        config = (config or TaskConfig()).model_copy(update={"webhook_config": webhook})
    intent_id = intent_id or new_intent_id()
    if config is not None and config.webhook_config is not None:
        hook = config.webhook_config
        tagged = hook.model_copy(update={"endpoint": with_intent_id(hook.endpoint, intent_id)})
        config = config.model_copy(update={"webhook_config": tagged})
    spec = RequestSpec("POST", "/api/v1/task", RequestKind.CREATE, json=typed.to_body(config))
    return SubmitPlan(request=typed, config=config, intent_id=intent_id, spec=spec)


def get_spec(task_id: str) -> RequestSpec:
    """GET the task: a read, retried on transient faults."""
    return RequestSpec("GET", _task_path(task_id), RequestKind.READ)


def cancel_spec(task_id: str) -> RequestSpec:
    """DELETE the task: a cancel, safe to retry (cancelling twice changes nothing)."""
    return RequestSpec("DELETE", _task_path(task_id), RequestKind.CANCEL)


def account_spec() -> RequestSpec:
    """GET the account behind the key, with its credits."""
    return RequestSpec("GET", "/account/info", RequestKind.READ)


def active_tasks_spec() -> RequestSpec:
    """GET the account's unfinished task counts per provider."""
    return RequestSpec("GET", "/account/active_tasks", RequestKind.READ)


# --- answers -------------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def _scrub(text: str, secrets: Iterable[str]) -> str:
    return mask_secrets(text, secrets)


def redact_request(request: httpx.Request) -> httpx.Request:
    """A copy of `request` safe to keep on an error: no API key, no body (it may hold secrets)."""
    headers = httpx.Headers(request.headers)
    if API_KEY_HEADER in headers:
        headers[API_KEY_HEADER] = REDACTED
    return httpx.Request(request.method, request.url, headers=headers)


def _redact_response(response: httpx.Response, secrets: Iterable[str]) -> httpx.Response:
    content = response.content
    for secret in secrets:
        if secret:
            content = content.replace(secret.encode(), REDACTED.encode())
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        content=content,
        request=redact_request(response.request),
    )


def make_status_error(
    *,
    status_code: int,
    code: int | None,
    api_message: str,
    retry_after_seconds: float | None = None,
    response: httpx.Response | None = None,
) -> APIStatusError:
    """The one place where an HTTP status, envelope code and message become an error class.

    The message wins over the code where PiAPI is known to use a text for a condition
    ("credit not enough" may come with any status); then the HTTP status decides, or, for an
    HTTP 2xx carrying an error envelope, the envelope code.
    """
    effective = status_code
    if 200 <= status_code < 300:  # an error envelope on HTTP 2xx: its code speaks, if HTTP-like
        effective = code if code is not None and 400 <= code <= 599 else 0
    lowered = api_message.lower()
    cls: type[APIStatusError]
    advice: str
    if any(text in lowered for text in _CREDIT_MESSAGES) or effective == 402:
        cls, advice = InsufficientCreditsError, "top up the PiAPI account, then submit again"
    elif effective == 429 or any(text in lowered for text in _RATE_MESSAGES):
        cls, advice = RateLimitError, "slow down"
        if retry_after_seconds is not None:
            advice = f"retry after {retry_after_seconds:g} s"
    elif effective == 400:
        cls, advice = BadRequestError, "fix the request; resending it as is will fail again"
    elif effective == 401:
        cls, advice = AuthenticationError, "check the API key (PIAPI_API_KEY)"
    elif effective == 403:
        cls, advice = PermissionDeniedError, "the account's plan does not allow this request"
    elif effective == 404:
        cls, advice = TaskNotFoundError, "check the task id (PiAPI deletes old tasks)"
    elif effective >= 500:
        cls, advice = ServerError, "PiAPI failed on its side; trying again later can help"
    else:
        cls, advice = APIStatusError, "see PiAPI's message"
    shown = api_message or "no message"
    code_part = f", code {code}" if code is not None and code != status_code else ""
    message = f"PiAPI answered HTTP {status_code}{code_part}: {shown}; {advice}"
    if cls is RateLimitError:
        return RateLimitError(
            message,
            status_code=status_code,
            code=code,
            api_message=api_message,
            response=response,
            retry_after_seconds=retry_after_seconds,
        )
    return cls(
        message, status_code=status_code, code=code, api_message=api_message, response=response
    )


def _as_code(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def unwrap(
    spec: RequestSpec,
    response: httpx.Response,
    *,
    secrets: Iterable[str] = (),
    intent_id: str | None = None,
) -> Any:
    """Return the envelope's `data`, or raise the error the answer means.

    Success is HTTP 2xx with a body `code` of 200, 0 or none (PiAPI's docs show 200, its
    schema 0). For a create, an answer we cannot read becomes `SubmitUncertainError`: the task
    may exist. The error carries a redacted copy of the response.
    """
    secrets = tuple(secrets)
    status = response.status_code
    try:
        body = json.loads(response.content) if response.content else None
    except ValueError:
        body = None
        is_json = False
    else:
        is_json = True
    envelope = body if isinstance(body, dict) else {}
    code = _as_code(envelope.get("code"))
    raw_message = envelope.get("message")
    api_message = _scrub(raw_message if isinstance(raw_message, str) else "", secrets)
    is_success = 200 <= status < 300 and (code is None or code in SUCCESS_CODES)
    if not is_success:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        error = make_status_error(
            status_code=status,
            code=code,
            api_message=api_message,
            retry_after_seconds=retry_after,
            response=_redact_response(response, secrets),
        )
        if spec.kind is RequestKind.CREATE and isinstance(error, ServerError):
            # A 5xx says nothing about whether the task was created before the failure.
            raise _uncertain(
                f"PiAPI answered HTTP {status} to the create request",
                intent_id=intent_id,
                request=response.request,
                status_code=status,
            ) from error
        raise error
    if not is_json or "data" not in envelope:
        problem = "not JSON" if not is_json else "not a {code, data, message} envelope"
        if spec.kind is RequestKind.CREATE:
            raise _uncertain(
                f"PiAPI's answer to the create request was {problem}",
                intent_id=intent_id,
                request=response.request,
                status_code=status,
            )
        raise UnexpectedResponseError(
            f"PiAPI's answer to {spec.describe()} (HTTP {status}) was {problem}"
        )
    return envelope["data"]


def _uncertain(
    what: str, *, intent_id: str | None, request: httpx.Request | None, status_code: int | None
) -> SubmitUncertainError:
    intent = intent_id or "unknown"
    return SubmitUncertainError(
        f"{what}, so the task may have been created and charged (intent {intent}). Do not "
        "resubmit blindly: look for the task first (a webhook, if one was set, arrives with "
        f"intent_id={intent} in its URL), and submit again only once you know it does not exist",
        intent_id=intent,
        request=None if request is None else redact_request(request),
        status_code=status_code,
    )


def transport_error(
    error: httpx.RequestError, spec: RequestSpec, *, intent_id: str | None = None
) -> PiAPIError:
    """Translate an httpx exception into ours (the one other place httpx errors are read).

    For a create, only failures that happened before the request left (connect errors and
    timeouts, waiting for a pooled connection) stay plain connection errors; anything later
    means the outcome is unknown and becomes `SubmitUncertainError`.
    """
    request: httpx.Request | None
    try:
        request = error.request
    except RuntimeError:
        request = None
    safe = None
    if request is not None:
        safe = redact_request(request)
        error.request = safe  # the chained cause must not carry the key either
    what = f"{spec.describe()} failed: {type(error).__name__}: {error}".rstrip(": ")
    never_sent = isinstance(
        error,
        httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.UnsupportedProtocol,
    )
    if spec.kind is RequestKind.CREATE and not never_sent:
        return _uncertain(
            f"the connection failed after the create request was sent ({type(error).__name__})",
            intent_id=intent_id,
            request=safe,
            status_code=None,
        )
    if isinstance(error, httpx.TimeoutException):
        return PiAPITimeoutError(f"{what}; no answer in time", request=safe)
    return PiAPIConnectionError(f"{what}; no usable answer from PiAPI", request=safe)


def _parse(model: Callable[[Any], Any], data: Any, what: str) -> Any:
    try:
        return model(data)
    except ValidationError as error:
        raise UnexpectedResponseError(f"PiAPI's {what} did not have the expected shape") from error


def parse_task(data: Any, spec: RequestSpec, *, intent_id: str | None = None) -> Task:
    """The Task in a response's `data`; on a create, an unreadable one is SubmitUncertainError."""
    try:
        task: Task = _parse(Task.model_validate, data, f"task in {spec.describe()}")
    except UnexpectedResponseError as error:
        if spec.kind is RequestKind.CREATE:
            raise _uncertain(
                "PiAPI's answer to the create request held no readable task",
                intent_id=intent_id,
                request=None,
                status_code=None,
            ) from error
        raise
    return task


def parse_account(data: Any) -> AccountInfo:
    """The account info from an unwrapped `data`; `UnexpectedResponseError` if unfit."""
    info: AccountInfo = _parse(AccountInfo.model_validate, data, "account info")
    return info


def parse_active_tasks(data: Any) -> dict[str, ActiveTaskCounts]:
    """Counts per provider from an unwrapped `data`; `UnexpectedResponseError` if unfit."""
    if not isinstance(data, Mapping):
        raise UnexpectedResponseError("PiAPI's active task counts were not an object")
    counts: dict[str, ActiveTaskCounts] = {}
    for provider, value in data.items():
        counts[str(provider)] = _parse(
            ActiveTaskCounts.model_validate, value, f"active task counts for {provider}"
        )
    return counts
