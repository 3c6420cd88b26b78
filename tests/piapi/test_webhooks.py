"""verify_webhook: constant-time secret check, strict body parsing, dedupe key, staleness."""

from __future__ import annotations

import json
from typing import Any

import pytest

from klingflow.emulator import EmulatorServer
from klingflow.piapi import (
    KlingVideoRequest,
    TaskStatus,
    WebhookConfig,
    WebhookDelivery,
    WebhookVerificationError,
    verify_webhook,
)

from .adapter import Api, Receiver, eventually

SECRET = "whsec-unit-5f2e"
TASK: dict[str, Any] = {
    "task_id": "7a1f0c3e-9d2b-4c8e-a1f0-0c3e9d2b4c8e",
    "model": "kling",
    "task_type": "video_generation",
    "status": "completed",
    "config": {"webhook_config": {"endpoint": "https://h/x", "secret": SECRET}},
    "output": {"video": "https://storage.example/v.mp4"},
}


def body(**overrides: Any) -> bytes:
    return json.dumps({"timestamp": 1_760_000_000, "data": TASK, **overrides}).encode()


def test_valid_delivery_is_parsed_into_a_task() -> None:
    """The right secret and a well-formed body give the delivery with its task."""
    delivery = verify_webhook({"x-webhook-secret": SECRET}, body(), secret=SECRET)
    assert delivery.timestamp == 1_760_000_000
    assert delivery.task.status is TaskStatus.COMPLETED
    assert delivery.task.video_url == "https://storage.example/v.mp4"


def test_header_name_is_case_insensitive_for_plain_dicts() -> None:
    """`X-Webhook-Secret` in a plain dict is found like the lowercase form."""
    delivery = verify_webhook({"X-Webhook-Secret": SECRET}, body(), secret=SECRET)
    assert delivery.task.task_id == TASK["task_id"]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "no x-webhook-secret"),
        ({"x-webhook-secret": ""}, "does not match"),
        ({"x-webhook-secret": SECRET + "x"}, "does not match"),
        ({"x-webhook-secret": SECRET[:-1]}, "does not match"),
        ({"x-webhook-secret": "ünïcode"}, "does not match"),
    ],
)
def test_missing_or_wrong_secret_is_rejected(headers: dict[str, str], message: str) -> None:
    """Deliveries without the exact secret raise WebhookVerificationError (never echoing it)."""
    with pytest.raises(WebhookVerificationError, match=message) as caught:
        verify_webhook(headers, body(), secret=SECRET)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        json.dumps({"timestamp": 1}).encode(),
        json.dumps({"timestamp": "soon", "data": TASK}).encode(),
        json.dumps({"timestamp": 1, "data": {"status": "completed"}}).encode(),
        json.dumps({"timestamp": 1, "data": {**TASK, "status": "exploded"}}).encode(),
    ],
    ids=["not-json", "array", "no-data", "bad-timestamp", "no-task-id", "bad-status"],
)
def test_malformed_body_is_rejected(raw: bytes) -> None:
    """A body that is not `{"timestamp": int, "data": <task>}` is a verification error."""
    with pytest.raises(WebhookVerificationError, match="body") as caught:
        verify_webhook({"x-webhook-secret": SECRET}, raw, secret=SECRET)
    assert SECRET not in str(caught.value)


def test_stale_delivery_is_rejected_with_max_age() -> None:
    """With `max_age_seconds`, a delivery older than that is refused; a fresh one passes."""
    headers = {"x-webhook-secret": SECRET}
    verify_webhook(headers, body(), secret=SECRET, max_age_seconds=60, now=1_760_000_030)
    with pytest.raises(WebhookVerificationError, match="stale"):
        verify_webhook(headers, body(), secret=SECRET, max_age_seconds=60, now=1_760_000_061)


def test_empty_secret_is_a_programming_error() -> None:
    """Verifying against an empty secret would accept anything: ValueError, not a pass."""
    with pytest.raises(ValueError, match="non-empty") as caught:
        verify_webhook({"x-webhook-secret": ""}, body(), secret="")
    assert not isinstance(caught.value, WebhookVerificationError)


def test_dedupe_key_is_task_status_and_timestamp() -> None:
    """Retried copies share a key; another status or timestamp does not."""
    delivery = verify_webhook({"x-webhook-secret": SECRET}, body(), secret=SECRET)
    assert delivery.dedupe_key == f"{TASK['task_id']}:completed:1760000000"
    later = WebhookDelivery(timestamp=1_760_000_005, task=delivery.task)
    assert later.dedupe_key != delivery.dedupe_key


def test_real_emulator_deliveries_verify(
    api: Api, emulator: EmulatorServer, receiver: Receiver
) -> None:
    """The emulator's own deliveries pass verify_webhook and carry the terminal task."""
    task = api.submit(
        KlingVideoRequest(prompt="p", duration=3),
        webhook=WebhookConfig(endpoint=receiver.url, secret=receiver.secret),
    )
    api.wait(task.task_id)
    assert eventually(lambda: bool(receiver.deliveries))
    assert receiver.rejected == 0
    assert [d.task.status for d in receiver.deliveries] == [TaskStatus.COMPLETED]
    # The receiver records the delivery before the emulator sees its answer and counts it.
    assert eventually(lambda: emulator.stats()["webhook_deliveries"] == 1)
