"""Incoming hooks: PiAPI's task webhooks, and `POST /hooks/{workflow}` run triggers.

A PiAPI delivery is only a hint. It is handled in four stages, each its own function so
further checks slot in where they belong:

1. **verify**: its `x-webhook-secret` matches (constant time) and its body parses;
2. **record**: it is new (retried copies are dropped by their dedupe key);
3. **answer**: 2xx at once. PiAPI gives up on a receiver that is slow to answer, and the
   confirming GET below waits for the client's request budget, which a busy batch spends:
   in the critical path it made deliveries time out (issue 17: 15 of 35 failed);
4. **process**, after the answer: a GET of the task at PiAPI confirms it; then the engine
   wakes the waiting node (through the status poller, which hears every answer the client
   gets), or settles a submission whose answer was lost (`?intent_id=` in the URL names it).
   If the GET fails, the waiting node's safety-net looks still find the task's end.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections import OrderedDict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Body, Query, Request, Response
from pydantic import BaseModel

from klingflow.errors import KlingflowError, WebhookVerificationError
from klingflow.piapi import WebhookDelivery, verify_webhook
from klingflow.piapi.webhooks import SECRET_HEADER
from klingflow.service.api import APIError, ErrorPublic
from klingflow.service.api.runs import IdempotencyKey, start_latest_run
from klingflow.service.deps import EngineDep, RegistryDep, SettingsDep
from klingflow.service.webhook_intents import checked_intent, intent_matches
from klingflow.settings import Settings
from klingflow.workflows.engine import Engine

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
    """What a PiAPI delivery led to: `delivered` (recorded; confirmed and acted on right
    after this answer) or `duplicate` (a copy of one already recorded)."""

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
    background: BackgroundTasks,
    intent_id: Annotated[str | None, Query(max_length=64)] = None,
) -> HookAcceptedPublic:
    """Receive a PiAPI task webhook (authenticated by its secret, not the API token)."""
    delivery = await _verify(request, settings)
    if intent_id is not None and not _INTENT_ID.match(intent_id):
        raise APIError(400, "BadRequest", "intent_id is malformed")
    intent_id = checked_intent(delivery.task, intent_id)  # the body's word; PiAPI's: after
    deliveries: DeliveryLog = request.app.state.webhooks
    if not deliveries.claim(delivery.dedupe_key):  # record
        return HookAcceptedPublic(outcome="duplicate", task_id=delivery.task.task_id)
    # answer now; confirm and act after the answer has left
    background.add_task(_process, engine, deliveries, delivery, intent_id)
    return HookAcceptedPublic(outcome="delivered", task_id=delivery.task.task_id)


async def _verify(request: Request, settings: Settings) -> WebhookDelivery:
    """The delivery, if its secret matches and its body parses (else 401, 400, 413, 503)."""
    if settings.webhook_secret is None:
        raise APIError(503, "WebhooksDisabled", "set KLINGFLOW_WEBHOOK_SECRET to accept webhooks")
    body = await _read_bounded(request, MAX_WEBHOOK_BYTES)
    secret = settings.webhook_secret.get_secret_value()
    try:
        return verify_webhook(
            request.headers, body, secret=secret, max_age_seconds=settings.webhook_window_seconds
        )
    except WebhookVerificationError as error:
        given = request.headers.get(SECRET_HEADER, "")
        if hmac.compare_digest(given.encode(), secret.encode()):
            raise APIError(400, "MalformedDelivery", str(error)) from None
        log.warning("refused a webhook delivery: %s", error)  # the error never holds secrets
        raise


async def _process(
    engine: Engine, deliveries: DeliveryLog, delivery: WebhookDelivery, intent_id: str | None
) -> None:
    """After the answer: confirm the delivery with a GET, then let the engine act on it."""
    task_id = delivery.task.task_id
    try:
        task = await engine.client.get(task_id)  # the body is only a hint
        if intent_id is not None and not intent_matches(task, intent_id):
            # The body said it was, PiAPI's own copy of the task says it was not: bind nothing.
            log.warning("task %s was not submitted for intent %s", task_id, intent_id)
            intent_id = None
        await engine.deliver_webhook(task, intent_id=intent_id)
    except KlingflowError as error:
        # Already answered, so PiAPI will not send it again: forget it (a copy may still
        # come) and leave the task to the waiting node's safety-net looks.
        deliveries.release(delivery.dedupe_key)
        log.warning("could not confirm the webhook for task %s: %s", task_id, error)
    except asyncio.CancelledError:
        # The server is stopping (its grace is over). The same as above, and the cancel ends
        # here: this is the request's last step, and raised on it would make uvicorn print
        # "Exception in ASGI application" with a traceback for an ordinary stop.
        deliveries.release(delivery.dedupe_key)
        log.warning("stopped before confirming the webhook for task %s", task_id)


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
    run, created = await start_latest_run(
        registry, engine, response, workflow, payload, idempotency_key=idempotency_key
    )
    return TriggeredPublic(run_id=run.run_id, status=run.status.value, created=created)
