"""The API key never shows: not in reprs, messages, tracebacks, attached requests, or logs."""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import Callable, Iterator

import httpx
import pytest

from klingflow.emulator import EmulatorServer, FaultRule
from klingflow.errors import KlingflowError
from klingflow.piapi import (
    AuthenticationError,
    KlingVideoRequest,
    PiAPIConnectionError,
    RateLimitError,
    ServerError,
    SubmitUncertainError,
    TaskNotFoundError,
    WebhookConfig,
)

from .adapter import Api

REQUEST = KlingVideoRequest(prompt="p")


def evidence(error: BaseException) -> Iterator[str]:
    """Every text a log or a debugger would show for an error, its causes and attachments."""
    yield "".join(traceback.format_exception(error))
    seen: BaseException | None = error
    while seen is not None:
        yield str(seen)
        yield repr(seen)
        yield repr(vars(seen))
        for name in ("request", "response"):
            try:
                attached = getattr(seen, name, None)
            except RuntimeError:  # httpx raises when an exception carries no request
                attached = None
            if isinstance(attached, httpx.Response):
                yield str(attached.headers) + attached.text
                attached = attached.request
            if isinstance(attached, httpx.Request):
                yield str(attached.headers) + str(attached.url)
        seen = seen.__cause__ or seen.__context__


def caught(call: Callable[[], object]) -> KlingflowError:
    with pytest.raises(KlingflowError) as info:
        call()
    return info.value


def test_key_appears_in_no_error_evidence_and_no_log(
    make_api: Callable[..., Api],
    emulator: EmulatorServer,
    api_key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Errors of every kind, with causes and attachments, and DEBUG logs never hold the key."""
    caplog.set_level(logging.DEBUG)
    api = make_api(max_retries=1)
    wrong_key = "kf-wrong-key-31415926"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    errors: list[KlingflowError] = [
        caught(lambda: api.get("missing-task")),
        caught(lambda: make_api(api_key=wrong_key).account()),
        caught(lambda: make_api(base_url=f"http://127.0.0.1:{closed_port}").get("t")),
    ]
    emulator.add_fault(FaultRule(action="drop", method="POST", path="/api/v1/task", phase="after"))
    errors.append(
        caught(
            lambda: api.submit(
                REQUEST, webhook=WebhookConfig(endpoint="https://h/x", secret="whsec-9")
            )
        )
    )
    emulator.add_fault(FaultRule(action="error", method="GET", path="/account", times=None))
    errors.append(caught(lambda: api.account()))
    emulator.reset()
    emulator.add_fault(
        FaultRule(action="rate_limit", path="/account", retry_after_seconds=900, times=None)
    )
    errors.append(caught(lambda: api.account()))
    kinds = [type(e) for e in errors]
    assert kinds == [
        TaskNotFoundError,
        AuthenticationError,
        PiAPIConnectionError,
        SubmitUncertainError,
        ServerError,
        RateLimitError,
    ]
    for error in errors:
        for text in evidence(error):
            assert api_key not in text
            assert wrong_key not in text
            assert "whsec-9" not in text
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert logged  # httpx and our retries did log
    assert api_key not in logged
    assert wrong_key not in logged


def test_key_is_not_in_the_clients_repr_or_vars(make_api: Callable[..., Api], api_key: str) -> None:
    """The client's repr, str and attribute reprs do not reveal the key."""
    client = make_api().client
    for text in (repr(client), str(client), repr(vars(client)), repr(client._http.auth)):
        assert api_key not in text
