"""Incoming hooks: PiAPI's task webhooks, and `POST /hooks/{workflow}` run triggers.

A PiAPI delivery is only a hint. It is believed once its `x-webhook-secret` matches
(constant time), it is new (retried copies are dropped by their dedupe key), and a GET of the
task at PiAPI confirms it; then the engine wakes the waiting run, or settles a submission
whose answer was lost (`?intent_id=` in the URL names it).
"""

from __future__ import annotations

import hmac
import logging
import re
from collections import OrderedDict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Request, Response
from pydantic import BaseModel

from klingflow.errors import WebhookVerificationError
from klingflow.piapi import verify_webhook
from klingflow.piapi.webhooks import SECRET_HEADER
from klingflow.service.api import APIError, ErrorPublic
from klingflow.service.api.runs import IdempotencyKey
from klingflow.service.deps import EngineDep, RegistryDep, SettingsDep
from klingflow.service.operations import latest_published, start_published
from klingflow.service.webhook_intents import checked_intent

__all__ = ["DeliveryLog", "HookAcceptedPublic", "TriggeredPublic", "piapi_router", "trigger_router"]

log = logging.getLogger(__name__)

piapi_router = APIRouter(tags=["hooks"])
trigger_router = APIRouter(tags=["hooks"])

MAX_WEBHOOK_BYTES = 1024 * 1024
"""Largest PiAPI delivery accepted (a task object is a few KiB)."""

_INTENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class DeliveryLog:
    """The dedupe keys of recent deliveries (an LRU of `size` keys, in memory).

    After a restart a retried copy is processed again; that is harmless, because delivering
    a task twice to the engine only wakes a waiter early and settles nothing twice.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._keys: OrderedDict[str, None] = OrderedDict()

    def claim(self, key: str) -> bool:
        """True the first time `key` is seen (and remember it); False for a copy."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        if len(self._keys) > self.size:
            self._keys.popitem(last=False)
        return True

    def release(self, key: str) -> None:
        """Forget `key`: processing failed, so PiAPI's retry must be let in."""
        self._keys.pop(key, None)


class HookAcceptedPublic(BaseModel):
    """What a PiAPI delivery led to."""

    outcome: Literal["delivered", "duplicate"]
    task_id: str


class TriggeredPublic(BaseModel):
    """The run a trigger started (or the Idempotency-Key's earlier run)."""

    run_id: str
    status: str
    created: bool


async def _read_bounded(request: Request, max_bytes: int) -> bytes:
    too_large = APIError(413, "PayloadTooLarge", f"a webhook body is at most {max_bytes} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise too_large
    return bytes(body)


@piapi_router.post(
    "/hooks/piapi",
    responses={
        400: {"model": ErrorPublic, "description": "Right secret, malformed body."},
        401: {"model": ErrorPublic, "description": "Missing or wrong x-webhook-secret."},
        413: {"model": ErrorPublic, "description": "Body too large."},
        503: {"model": ErrorPublic, "description": "KLINGFLOW_WEBHOOK_SECRET is not set."},
    },
)
async def piapi_webhook(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    intent_id: Annotated[str | None, Query(max_length=64)] = None,
) -> HookAcceptedPublic:
    """Receive a PiAPI task webhook (authenticated by its secret, not the API token)."""
    if settings.webhook_secret is None:
        raise APIError(503, "WebhooksDisabled", "set KLINGFLOW_WEBHOOK_SECRET to accept webhooks")
    body = await _read_bounded(request, MAX_WEBHOOK_BYTES)
    secret = settings.webhook_secret.get_secret_value()
    try:
        delivery = verify_webhook(
            request.headers, body, secret=secret, max_age_seconds=settings.webhook_window_seconds
        )
    except WebhookVerificationError as error:
        given = request.headers.get(SECRET_HEADER, "")
        if hmac.compare_digest(given.encode(), secret.encode()):
            raise APIError(400, "MalformedDelivery", str(error)) from None
        log.warning("refused a webhook delivery: %s", error)  # the error never holds secrets
        raise
    if intent_id is not None and not _INTENT_ID.match(intent_id):
        raise APIError(400, "BadRequest", "intent_id is malformed")
    if not request.app.state.webhooks.claim(delivery.dedupe_key):
        return HookAcceptedPublic(outcome="duplicate", task_id=delivery.task.task_id)
    is_done = False
    try:
        task = await engine.client.get(delivery.task.task_id)  # the body is only a hint
        await engine.deliver_webhook(task, intent_id=checked_intent(task, intent_id))
        is_done = True
    finally:
        if not is_done:  # let PiAPI's retry of this delivery in
            request.app.state.webhooks.release(delivery.dedupe_key)
    return HookAcceptedPublic(outcome="delivered", task_id=task.task_id)


@trigger_router.post(
    "/hooks/{workflow}",
    status_code=201,
    responses={
        404: {"model": ErrorPublic, "description": "Never published."},
        422: {"model": ErrorPublic, "description": "The payload does not fit the inputs."},
    },
)
async def trigger_workflow(
    workflow: str,
    registry: RegistryDep,
    engine: EngineDep,
    response: Response,
    payload: Annotated[dict[str, Any], Body()],
    idempotency_key: IdempotencyKey = None,
) -> TriggeredPublic:
    """Start a run of the workflow's latest version with the JSON body as trigger."""
    published = latest_published(registry, workflow)
    run, created = await start_published(
        engine, published, payload, idempotency_key=idempotency_key
    )
    if not created:
        response.status_code = 200
    return TriggeredPublic(run_id=run.run_id, status=run.status.value, created=created)
