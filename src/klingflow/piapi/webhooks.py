"""Checking PiAPI webhook deliveries before trusting them.

PiAPI does not sign deliveries: it echoes the task's `webhook_config.secret` in the
`x-webhook-secret` header and POSTs `{"timestamp": <unix s>, "data": <task>}`. So a
delivery is verified by comparing that secret in constant time, and is a hint: de-duplicate
it with `dedupe_key` (PiAPI retries), and confirm with a GET before acting on it.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from klingflow.errors import WebhookVerificationError
from klingflow.piapi.models import Task

__all__ = ["SECRET_HEADER", "WebhookDelivery", "verify_webhook"]

SECRET_HEADER = "x-webhook-secret"  # noqa: S105  # a header name, not a secret


class WebhookDelivery(BaseModel):
    """A webhook delivery: when PiAPI sent it, and the task as it was then.

    Parses the wire body as is (`{"timestamp", "data"}`; `data` is the task) or with the
    field's own name, `task`. Parsing does not verify: `verify_webhook` checks the secret.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    timestamp: int
    task: Task = Field(validation_alias=AliasChoices("data", "task"))

    @property
    def dedupe_key(self) -> str:
        """`task_id:status:timestamp`: equal for retried copies of one delivery."""
        return f"{self.task.task_id}:{self.task.status.value}:{self.timestamp}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    for key, item in headers.items():  # plain dicts are case-sensitive; HTTP headers are not
        if key.lower() == name:
            return item
    return None


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str,
    max_age_seconds: float | None = None,
    now: float | None = None,
) -> WebhookDelivery:
    """Check a delivery's secret (constant time) and parse its body.

    Raises `WebhookVerificationError` when the secret is missing or wrong, the body is not a
    delivery, or (with `max_age_seconds`) its timestamp is further than that from now, in
    the past or the future; `now` is the
    current Unix time, for tests. The error never repeats the secret.
    """
    if not secret:
        raise ValueError("verify_webhook needs the non-empty secret the task was submitted with")
    given = _header(headers, SECRET_HEADER)
    if given is None:
        raise WebhookVerificationError(f"the delivery has no {SECRET_HEADER} header")
    if not hmac.compare_digest(given.encode(), secret.encode()):
        raise WebhookVerificationError(f"the delivery's {SECRET_HEADER} does not match")
    try:
        payload: Any = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, a huge number, nested too deeply
        raise WebhookVerificationError("the delivery body is not JSON") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
        raise WebhookVerificationError('the delivery body is not {"timestamp", "data"}')
    try:
        delivery = WebhookDelivery.model_validate(
            {"timestamp": payload.get("timestamp"), "data": payload["data"]}
        )
    except ValidationError as error:
        # Name the fields only: pydantic's own text quotes input, which may hold the secret.
        fields = ", ".join(".".join(map(str, e["loc"])) for e in error.errors())
        raise WebhookVerificationError(f"the delivery body is malformed ({fields})") from None
    if max_age_seconds is not None:
        age = (time.time() if now is None else now) - delivery.timestamp
        if age > max_age_seconds:
            raise WebhookVerificationError(
                f"the delivery for task {delivery.task.task_id} is {age:.0f} s old "
                f"(more than {max_age_seconds:g} s): stale or replayed"
            )
        if -age > max_age_seconds:
            raise WebhookVerificationError(
                f"the delivery for task {delivery.task.task_id} is dated {-age:.0f} s in the "
                f"future (more than {max_age_seconds:g} s): forged or a broken clock"
            )
    return delivery
