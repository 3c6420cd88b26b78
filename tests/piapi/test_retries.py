"""Retries: reads and cancels ride out faults; a paid create is resent only if provably unsent."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Literal

import httpx
import pytest

from klingflow.emulator import EmulatorServer, FaultRule
from klingflow.piapi import (
    KlingVideoRequest,
    PiAPI,
    PiAPIConnectionError,
    PiAPIError,
    PiAPITimeoutError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    SubmitUncertainError,
    TaskStatus,
    WebhookConfig,
)

from .adapter import Api

TASK_PATH = "/api/v1/task"
REQUEST = KlingVideoRequest(prompt="a quiet harbour")


def gets_of(emulator: EmulatorServer, task_id: str) -> int:
    return int(emulator.stats()["tasks"][task_id]["gets"])


@pytest.mark.parametrize(
    "fault",
    [
        FaultRule(action="error", method="GET", path=TASK_PATH, status=503, times=2),
        FaultRule(action="error", method="GET", path=TASK_PATH, status=500, times=2),
        FaultRule(action="drop", method="GET", path=TASK_PATH, phase="after", times=2),
        FaultRule(action="malformed", method="GET", path=TASK_PATH, phase="after", times=2),
        FaultRule(
            action="rate_limit", method="GET", path=TASK_PATH, retry_after_seconds=0, times=2
        ),
    ],
    ids=["503", "500", "dropped", "malformed", "429"],
)
def test_get_is_retried_through_transient_faults(
    api: Api, emulator: EmulatorServer, fault: FaultRule
) -> None:
    """A GET hit by two 5xx, drops, malformed bodies or 429s succeeds on the third attempt."""
    task = api.submit(REQUEST)
    emulator.add_fault(fault)
    assert api.get(task.task_id).task_id == task.task_id
    assert gets_of(emulator, task.task_id) == 3


def test_get_gives_up_after_max_retries(
    make_api: Callable[..., Api], emulator: EmulatorServer
) -> None:
    """With every GET failing, the client tries 1 + max_retries times and raises ServerError."""
    api = make_api(max_retries=2)
    task = api.submit(REQUEST)
    emulator.add_fault(FaultRule(action="error", method="GET", path=TASK_PATH, times=None))
    with pytest.raises(ServerError) as caught:
        api.get(task.task_id)
    assert caught.value.status_code == 500
    assert gets_of(emulator, task.task_id) == 3


def test_per_call_max_retries_overrides_the_client(api: Api, emulator: EmulatorServer) -> None:
    """`max_retries=0` on one call sends exactly one request."""
    task = api.submit(REQUEST)
    emulator.add_fault(FaultRule(action="error", method="GET", path=TASK_PATH, status=502))
    with pytest.raises(ServerError):
        api.get(task.task_id, max_retries=0)
    assert gets_of(emulator, task.task_id) == 1


def test_get_timeout_is_retried(make_api: Callable[..., Api], emulator: EmulatorServer) -> None:
    """A GET that times out is sent again, and the retry's answer is returned."""
    api = make_api(timeout_seconds=0.2)
    task = api.submit(REQUEST)
    emulator.add_fault(FaultRule(action="slow", method="GET", path=TASK_PATH, delay_seconds=0.6))
    assert api.get(task.task_id).task_id == task.task_id
    assert gets_of(emulator, task.task_id) == 2


def test_get_timeout_after_all_retries_is_a_timeout_error(
    make_api: Callable[..., Api], emulator: EmulatorServer
) -> None:
    """When every attempt times out, PiAPITimeoutError says so."""
    api = make_api(timeout_seconds=0.1, max_retries=1)
    task = api.submit(REQUEST)
    emulator.add_fault(
        FaultRule(action="slow", method="GET", path=TASK_PATH, delay_seconds=0.3, times=None)
    )
    with pytest.raises(PiAPITimeoutError, match="no answer in time"):
        api.get(task.task_id)


def test_retry_after_is_honoured(api: Api, emulator: EmulatorServer) -> None:
    """A 429 with Retry-After: 1 makes the client wait about a second before retrying."""
    task = api.submit(REQUEST)
    emulator.add_fault(
        FaultRule(action="rate_limit", method="GET", path=TASK_PATH, retry_after_seconds=1)
    )
    started = time.monotonic()
    api.get(task.task_id)
    assert time.monotonic() - started >= 0.95
    assert gets_of(emulator, task.task_id) == 2


def test_retry_after_beyond_the_policy_cap_is_raised_at_once(
    api: Api, emulator: EmulatorServer
) -> None:
    """A Retry-After longer than max_retry_after_seconds is not slept through: it is raised."""
    task = api.submit(REQUEST)
    emulator.add_fault(
        FaultRule(action="rate_limit", method="GET", path=TASK_PATH, retry_after_seconds=500)
    )
    with pytest.raises(RateLimitError) as caught:
        api.get(task.task_id)
    assert caught.value.retry_after_seconds == 500
    assert gets_of(emulator, task.task_id) == 1


def test_cancel_is_retried_after_a_5xx(api: Api, emulator: EmulatorServer) -> None:
    """A cancel that meets a 503 is sent again and succeeds."""
    emulator.configure(pending_seconds=10_000)
    task = api.submit(REQUEST)
    emulator.add_fault(FaultRule(action="error", method="DELETE", path=TASK_PATH, status=503))
    assert api.cancel(task.task_id).is_terminal
    assert emulator.stats()["cancels"] == 2


def test_cancel_whose_answer_was_lost_still_returns_the_cancelled_task(
    api: Api, emulator: EmulatorServer
) -> None:
    """A cancel accepted but dropped is retried; the 'not pending' answer resolves by a GET."""
    emulator.configure(pending_seconds=10_000)
    task = api.submit(REQUEST)
    emulator.add_fault(FaultRule(action="drop", method="DELETE", path=TASK_PATH, phase="after"))
    cancelled = api.cancel(task.task_id)
    assert cancelled.is_terminal
    assert cancelled.status is not TaskStatus.COMPLETED


def test_create_is_retried_after_a_429(api: Api, emulator: EmulatorServer) -> None:
    """A 429 on the create means PiAPI did not take it: it is resent, and one task exists."""
    emulator.add_fault(
        FaultRule(action="rate_limit", method="POST", path=TASK_PATH, retry_after_seconds=0)
    )
    task = api.submit(REQUEST)
    stats = emulator.stats()
    assert stats["create_requests"] == 2
    assert stats["creates"] == 1
    assert task.task_id in stats["tasks"]


@pytest.mark.parametrize("phase", ["before", "after"])
@pytest.mark.parametrize("status", [500, 502, 503])
def test_create_5xx_is_uncertain_and_never_resent(
    api: Api, emulator: EmulatorServer, phase: Literal["before", "after"], status: int
) -> None:
    """A 5xx on the create raises SubmitUncertainError with the intent id; one request only."""
    emulator.add_fault(
        FaultRule(action="error", method="POST", path=TASK_PATH, status=status, phase=phase)
    )
    with pytest.raises(SubmitUncertainError) as caught:
        api.submit(REQUEST, intent_id="intent-5xx")
    assert caught.value.intent_id == "intent-5xx"
    assert caught.value.status_code == status
    assert "do not resubmit" in str(caught.value).lower()
    assert emulator.stats()["create_requests"] == 1


def test_create_accepted_then_dropped_is_uncertain_and_created_once(
    api: Api, emulator: EmulatorServer
) -> None:
    """A create PiAPI accepted but whose answer was cut is SubmitUncertainError; one task."""
    emulator.add_fault(FaultRule(action="drop", method="POST", path=TASK_PATH, phase="after"))
    with pytest.raises(SubmitUncertainError) as caught:
        api.submit(REQUEST)
    assert len(caught.value.intent_id) == 32  # a generated uuid4 hex
    assert not caught.value.retryable
    stats = emulator.stats()
    assert stats["creates"] == 1
    assert stats["create_requests"] == 1


def test_create_with_a_malformed_answer_is_uncertain(api: Api, emulator: EmulatorServer) -> None:
    """A truncated JSON answer to the create cannot prove anything: SubmitUncertainError."""
    emulator.add_fault(FaultRule(action="malformed", method="POST", path=TASK_PATH, phase="after"))
    with pytest.raises(SubmitUncertainError):
        api.submit(REQUEST)
    assert emulator.stats()["create_requests"] == 1


def test_create_read_timeout_is_uncertain_and_never_resent(
    make_api: Callable[..., Api], emulator: EmulatorServer
) -> None:
    """A create that times out waiting for the answer may have been taken: no resend."""
    api = make_api(timeout_seconds=0.15)
    emulator.add_fault(
        FaultRule(action="slow", method="POST", path=TASK_PATH, delay_seconds=0.4, phase="after")
    )
    with pytest.raises(SubmitUncertainError):
        api.submit(REQUEST)
    time.sleep(0.4)  # the emulator finishes handling the slow request meanwhile
    stats = emulator.stats()
    assert stats["create_requests"] == 1
    assert stats["creates"] == 1  # it was indeed created: resending would have paid twice


def test_create_refused_connection_is_retried_then_a_connection_error(
    make_api: Callable[..., Api],
) -> None:
    """Connect errors mean nothing was sent: the create is retried, then PiAPIConnectionError."""
    attempts: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        raise httpx.ConnectError("connection refused", request=request)

    api = make_api(max_retries=3, transport=httpx.MockTransport(refuse))
    with pytest.raises(PiAPIConnectionError) as caught:
        api.submit(REQUEST)
    assert not isinstance(caught.value, SubmitUncertainError)
    assert len(attempts) == 4


def test_create_against_a_closed_port_is_a_plain_connection_error(
    make_api: Callable[..., Api],
) -> None:
    """A real refused connection (nothing listening) is not mistaken for an uncertain submit."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = make_api(base_url=f"http://127.0.0.1:{port}", max_retries=1)
    with pytest.raises(PiAPIConnectionError) as caught:
        api.submit(REQUEST)
    assert not isinstance(caught.value, SubmitUncertainError)


def test_create_write_failure_after_sending_is_uncertain(make_api: Callable[..., Api]) -> None:
    """A connection lost while reading the create's answer is uncertain, and sent only once."""
    attempts: list[httpx.Request] = []

    def lose(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        raise httpx.ReadError("connection reset by peer", request=request)

    api = make_api(transport=httpx.MockTransport(lose))
    with pytest.raises(SubmitUncertainError):
        api.submit(REQUEST)
    assert len(attempts) == 1


def test_intent_id_is_added_to_the_webhook_endpoint(api: Api, emulator: EmulatorServer) -> None:
    """With a webhook, the endpoint PiAPI stores carries `intent_id`, keeping its own query."""
    hook = WebhookConfig(endpoint="https://example.com/hook?source=kf", secret="s")
    task = api.submit(REQUEST, webhook=hook, intent_id="abc123")
    endpoint = task.config["webhook_config"]["endpoint"] if task.config else ""
    assert endpoint == "https://example.com/hook?source=kf&intent_id=abc123"
    assert "intent_id" not in hook.endpoint  # the caller's object is untouched


def test_on_retry_hears_each_retry_of_an_unreachable_host() -> None:
    """`on_retry(error, delay)` is called before each retry, so a caller can say so at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    heard: list[tuple[PiAPIError, float]] = []
    policy = RetryPolicy(max_retries=2, initial_delay_seconds=0.001, max_delay_seconds=0.001)
    with (
        PiAPI(
            api_key="k",
            base_url=f"http://127.0.0.1:{port}",
            retry_policy=policy,
            on_retry=lambda error, delay: heard.append((error, delay)),
        ) as client,
        pytest.raises(PiAPIConnectionError),
    ):
        client.get("a-task")
    assert len(heard) == 2
    assert all(isinstance(error, PiAPIConnectionError) for error, _ in heard)


@pytest.mark.parametrize("url", ["127.0.0.1:8787", "localhost:8787", "ftp://example.com"])
def test_a_base_url_without_http_scheme_is_refused_at_construction(url: str) -> None:
    """A URL the client could never send to raises ValueError before any request."""
    with pytest.raises(ValueError, match="needs http:// or https://"):
        PiAPI(api_key="k", base_url=url)
