"""The sans-I/O core: envelope unwrapping, the one status-to-error mapping, retry decisions."""

from __future__ import annotations

import email.utils
import json
from typing import Any

import httpx
import pytest

from klingflow.errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    InsufficientCreditsError,
    PermissionDeniedError,
    PiAPIConnectionError,
    PiAPITimeoutError,
    RateLimitError,
    ServerError,
    SubmitUncertainError,
    TaskNotFoundError,
    UnexpectedResponseError,
)
from klingflow.piapi import RetryPolicy
from klingflow.piapi._retries import retry_delay
from klingflow.piapi._wire import (
    RequestKind,
    RequestSpec,
    get_spec,
    make_status_error,
    parse_retry_after,
    unwrap,
)

GET = get_spec("t-1")
CREATE = RequestSpec("POST", "/api/v1/task", RequestKind.CREATE, json={})
NO_JITTER = RetryPolicy(initial_delay_seconds=1, max_delay_seconds=8, jitter=False)


def answer(status: int, payload: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = httpx.Request("GET", "https://api.piapi.ai/x", headers={"x-api-key": "sk-wire"})
    return httpx.Response(status, content=content, headers=headers, request=request)


@pytest.mark.parametrize("code", [200, 0, None, "200"])
def test_success_envelope_codes_return_data(code: object) -> None:
    """HTTP 2xx with body code 200, 0, "200" or none is success; `data` comes back."""
    envelope: dict[str, Any] = {"data": {"x": 1}, "message": "success"}
    if code is not None:
        envelope["code"] = code
    assert unwrap(GET, answer(200, envelope)) == {"x": 1}
    assert unwrap(GET, answer(201, envelope)) == {"x": 1}


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (400, 400, "input.duration: bad", BadRequestError),
        (401, 401, "Unauthorized", AuthenticationError),
        (402, 402, "payment required", InsufficientCreditsError),
        (403, 403, "plan", PermissionDeniedError),
        (404, 404, "task not found", TaskNotFoundError),
        (429, 429, "rate limit exceeded", RateLimitError),
        (500, 500, "oops", ServerError),
        (503, 503, "unavailable", ServerError),
        (418, 418, "teapot", APIStatusError),
        (400, 400, "failed to freeze credit: credit not enough", InsufficientCreditsError),
        (500, 500, "quota not enough", InsufficientCreditsError),
        (200, 10001, "freeze credit failed", InsufficientCreditsError),
        (200, 500, "internal", ServerError),
        (200, 429, "slow down", RateLimitError),
        (200, 10000, "something else", APIStatusError),
        (200, 1, "odd", APIStatusError),
        (400, 400, "Too Many Requests", RateLimitError),
    ],
)
def test_status_code_and_message_map_to_one_error_class(
    status: int, code: int, message: str, expected: type[APIStatusError]
) -> None:
    """Each HTTP status / envelope code / message maps to its class, keeping the evidence."""
    with pytest.raises(APIStatusError) as caught:
        unwrap(GET, answer(status, {"code": code, "data": None, "message": message}))
    error = caught.value
    assert type(error) is expected
    assert (error.status_code, error.code, error.api_message) == (status, code, message)
    assert message in str(error)
    assert error.response is not None
    assert error.response.request.headers["x-api-key"] == "***"


def test_rate_limit_error_reads_retry_after_seconds_and_dates() -> None:
    """Retry-After as delta-seconds or as an HTTP date both become seconds to wait."""
    with pytest.raises(RateLimitError) as caught:
        unwrap(GET, answer(429, {"code": 429, "message": "x"}, {"retry-after": "7"}))
    assert caught.value.retry_after_seconds == 7
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after(date, now=1_000_000) == 30
    assert parse_retry_after("garbage") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("-5") == 0


@pytest.mark.parametrize("payload", [b"{trunc", b"", b"[1, 2]", {"code": 200}])
def test_unreadable_answers_are_unexpected_for_reads(payload: Any) -> None:
    """A 2xx that is not a `{code, data, message}` envelope is UnexpectedResponseError."""
    with pytest.raises(UnexpectedResponseError):
        unwrap(GET, answer(200, payload))


@pytest.mark.parametrize("payload", [b"{trunc", b"", {"code": 200}])
def test_unreadable_answers_are_uncertain_for_creates(payload: Any) -> None:
    """For a create the same answer means the task may exist: SubmitUncertainError."""
    with pytest.raises(SubmitUncertainError) as caught:
        unwrap(CREATE, answer(200, payload), intent_id="i-1")
    assert caught.value.intent_id == "i-1"


def test_create_5xx_is_uncertain_but_4xx_is_definite() -> None:
    """A create's 5xx is uncertain (the task may exist); a 4xx certainly created nothing."""
    with pytest.raises(SubmitUncertainError):
        unwrap(CREATE, answer(502, {"code": 502, "message": "bad gateway"}), intent_id="i")
    with pytest.raises(BadRequestError):
        unwrap(CREATE, answer(400, {"code": 400, "message": "input.prompt: required"}))


def test_key_in_a_message_is_scrubbed() -> None:
    """If PiAPI ever echoes the key, it is replaced before reaching the error or its response."""
    with pytest.raises(AuthenticationError) as caught:
        unwrap(
            GET,
            answer(401, {"code": 401, "message": "bad key sk-wire"}),
            secrets=["sk-wire"],
        )
    assert "sk-wire" not in str(caught.value)
    assert caught.value.response is not None
    assert b"sk-wire" not in caught.value.response.content


def test_make_status_error_without_message_says_so() -> None:
    """An error answer with no message still gives a readable, actionable message."""
    error = make_status_error(status_code=401, code=None, api_message="")
    assert "no message" in str(error)
    assert "PIAPI_API_KEY" in str(error)


def _connection(kind: type[PiAPIConnectionError] = PiAPIConnectionError) -> PiAPIConnectionError:
    return kind("x")


def _status(cls: type[APIStatusError], status: int) -> APIStatusError:
    return cls("x", status_code=status)


@pytest.mark.parametrize(
    ("kind", "error", "retried"),
    [
        (RequestKind.READ, _connection(), True),
        (RequestKind.READ, _connection(PiAPITimeoutError), True),
        (RequestKind.READ, _status(ServerError, 503), True),
        (RequestKind.READ, _status(RateLimitError, 429), True),
        (RequestKind.READ, UnexpectedResponseError("x"), True),
        (RequestKind.READ, _status(BadRequestError, 400), False),
        (RequestKind.READ, _status(TaskNotFoundError, 404), False),
        (RequestKind.CANCEL, _status(ServerError, 500), True),
        (RequestKind.CREATE, _connection(), True),
        (RequestKind.CREATE, _connection(PiAPITimeoutError), True),
        (RequestKind.CREATE, _status(RateLimitError, 429), True),
        (RequestKind.CREATE, SubmitUncertainError("x", intent_id="i"), False),
        (RequestKind.CREATE, _status(ServerError, 500), False),
        (RequestKind.CREATE, UnexpectedResponseError("x"), False),
        (RequestKind.CREATE, _status(InsufficientCreditsError, 402), False),
    ],
)
def test_retry_decision_depends_on_what_the_request_does(
    kind: RequestKind, error: Any, retried: bool
) -> None:
    """Reads retry transient failures; a create retries only what provably was not accepted."""
    delay = retry_delay(kind, error, retry_number=0, max_retries=4, policy=NO_JITTER)
    assert (delay is not None) is retried


def test_backoff_doubles_to_the_cap_and_jitter_stays_below_it() -> None:
    """Without jitter waits double up to the cap; full jitter draws within [0, cap]."""
    assert [NO_JITTER.backoff_seconds(n) for n in range(6)] == [1, 2, 4, 8, 8, 8]
    jittered = RetryPolicy(initial_delay_seconds=1, max_delay_seconds=8)
    draws = [jittered.backoff_seconds(3) for _ in range(200)]
    assert all(0 <= d <= 8 for d in draws)
    assert len(set(draws)) > 1


def test_retry_after_replaces_the_backoff_and_attempts_run_out() -> None:
    """A 429's Retry-After is the wait; after max_retries there is no further retry."""
    limited = RateLimitError("x", status_code=429, retry_after_seconds=3)
    assert (
        retry_delay(RequestKind.READ, limited, retry_number=0, max_retries=4, policy=NO_JITTER) == 3
    )
    assert (
        retry_delay(RequestKind.READ, limited, retry_number=4, max_retries=4, policy=NO_JITTER)
        is None
    )


def test_retry_policy_rejects_negative_values() -> None:
    """Negative attempts or delays are programming mistakes."""
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError, match="delays"):
        RetryPolicy(initial_delay_seconds=-1)


@pytest.mark.parametrize("task_id", ["", "   "])
def test_empty_task_id_is_rejected_locally(task_id: str) -> None:
    """An empty task id never becomes a request to `/api/v1/task/`."""
    from klingflow.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="task_id"):
        get_spec(task_id)


def test_task_id_is_quoted_into_the_path() -> None:
    """A task id cannot change the path it is sent to."""
    assert get_spec("../account/info").path == "/api/v1/task/..%2Faccount%2Finfo"
