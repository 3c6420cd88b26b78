"""PiAPI's webhooks, delivered for real by the emulator (and forged or repeated by hand)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from klingflow.emulator import EmulatorServer, FaultRule
from klingflow.piapi import RateLimit, WaitPolicy

from .conftest import WEBHOOK_SECRET, Service, StartService

SLOW_WAIT = WaitPolicy(initial_interval_seconds=60, max_interval_seconds=60, jitter=0)
"""Polls once a minute: a run that finishes within seconds was woken by its webhook."""

LOST_ANSWER = FaultRule(action="drop", method="POST", path="/api/v1/task", phase="after")


def delivery(task: dict[str, Any], *, timestamp: int | None = None) -> bytes:
    """A delivery body dated now (deliveries over 24 h from now are refused, issue #15.3)."""
    when = int(time.time()) if timestamp is None else timestamp
    return json.dumps({"timestamp": when, "data": task}).encode()


def hook(service: Service, body: bytes, *, secret: str = WEBHOOK_SECRET, **params: str) -> Any:
    headers = {"x-webhook-secret": secret, "content-type": "application/json"}
    return service.http.post("/hooks/piapi", content=body, headers=headers, params=params)


def paused_over_lost_answer(service: Service, emulator: EmulatorServer) -> tuple[str, str]:
    """A run paused over a submission whose answer was lost: (run id, intent id)."""
    service.publish()
    emulator.add_fault(LOST_ANSWER)
    run_id = service.start()
    detail = service.settle(run_id)
    assert detail["run"]["status"] == "paused"
    [submission] = detail["submissions"]
    assert submission["state"] == "uncertain"
    return run_id, submission["intent_id"]


def test_webhook_wakes_the_waiting_run(
    start_service: StartService, emulator: EmulatorServer
) -> None:
    """The emulator's webhook reaches /hooks/piapi and ends a minute-long poll at once."""
    service = start_service(wait_policy=SLOW_WAIT)
    service.publish()
    started = time.monotonic()
    detail = service.settle(service.start(), timeout_seconds=20)
    assert detail["run"]["status"] == "completed", detail["run"]["message"]
    assert time.monotonic() - started < 20
    assert emulator.stats()["webhook_deliveries"] >= 1
    assert emulator.stats()["webhook_failures"] == 0


def test_lost_answer_is_reconciled_by_its_webhook(
    service: Service, emulator: EmulatorServer
) -> None:
    """A submission whose answer was lost is settled by PiAPI's webhook: one create, done."""
    emulator.configure(webhook_faults={"delay_seconds": 500})  # after the run has paused
    run_id, _ = paused_over_lost_answer(service, emulator)
    detail = service.finish(run_id)
    assert detail["run"]["status"] == "completed", detail["run"]["message"]
    assert emulator.stats()["creates"] == 1
    [submission] = detail["submissions"]
    assert submission["note"] == "reconciled by PiAPI's webhook"


def test_a_task_no_node_waits_for_is_settled_by_its_webhook(
    service: Service, emulator: EmulatorServer
) -> None:
    """The seed action alone returns a task id at once; its cost is reserved until PiAPI's
    webhook says the task completed, then counted as spent."""
    service.publish(
        "name: fire\nnodes:\n  - {id: generate, type: kling.generate_video,"
        " with: {prompt: a red fox, duration: 5s, model_name: Kling V2.1}}\n"
    )
    # After the run completed, which it does at once: 3 s of real time (the delay is in the
    # emulator's time; its 0.5 emulated seconds were 0.5 ms, and a loaded machine lost the race).
    time_scale = emulator.configure()["time_scale"]
    emulator.configure(webhook_faults={"delay_seconds": 3 * time_scale})
    run_id = service.start("fire", {})
    ran = service.finish(run_id)["run"]
    assert ran["status"] == "completed", ran["message"]
    assert (ran["spent_usd"], ran["reserved_usd"]) == ("0.00", "0.26")
    deadline = time.monotonic() + 20
    while (detail := service.finish(run_id))["run"]["reserved_usd"] != "0.00":
        assert time.monotonic() < deadline, detail
        time.sleep(0.05)
    assert detail["run"]["spent_usd"] == "0.26"
    [submission] = detail["submissions"]
    assert submission["state"] == "completed"


def test_forged_and_repeated_deliveries_change_nothing(
    service: Service, emulator: EmulatorServer
) -> None:
    """A wrong or missing secret is 401 and settles nothing; a copy of a delivery is ignored."""
    emulator.configure(webhook_faults={"drop_probability": 1.0})
    run_id, intent_id = paused_over_lost_answer(service, emulator)
    [task] = emulator.tasks()
    body = delivery(task)
    forged = hook(service, body, secret="guessed", intent_id=intent_id)
    assert forged.status_code == 401
    assert "guessed" not in forged.text
    unsigned = service.http.post("/hooks/piapi", content=body, params={"intent_id": intent_id})
    assert unsigned.status_code == 401
    detail = service.settle(run_id)
    assert detail["run"]["status"] == "paused"
    assert detail["submissions"][0]["state"] == "uncertain"

    first = hook(service, body, intent_id=intent_id)
    assert first.json() == {"outcome": "delivered", "task_id": task["task_id"]}
    assert hook(service, body, intent_id=intent_id).json()["outcome"] == "duplicate"
    detail = service.finish(run_id)
    assert detail["run"]["status"] == "completed", detail["run"]["message"]
    assert emulator.stats()["creates"] == 1


def test_oversized_and_malformed_deliveries_are_refused(service: Service) -> None:
    """A body over 1 MiB is 413; a right secret with a malformed body is 400."""
    huge = hook(service, b"{" + b" " * (1024 * 1024 + 1) + b"}")
    assert huge.status_code == 413
    assert huge.json()["error"] == "PayloadTooLarge"
    malformed = hook(service, b'{"data": 5}')
    assert malformed.status_code == 400
    assert malformed.json()["error"] == "MalformedDelivery"
    body = delivery({"task_id": "x", "status": "completed"})
    unsigned = hook(service, body, secret="guessed", intent_id="../../etc")
    assert unsigned.status_code == 401  # who asks is checked first, then what they sent
    assert hook(service, body, intent_id="../../etc").status_code == 400


def test_webhooks_are_refused_without_a_configured_secret(start_service: StartService) -> None:
    """With no KLINGFLOW_WEBHOOK_SECRET, /hooks/piapi answers 503 and trusts nothing."""
    service = start_service(webhook_secret=None)
    response = hook(service, delivery({"task_id": "x"}))
    assert response.status_code == 503
    assert response.json()["error"] == "WebhooksDisabled"


def test_a_delivery_cannot_settle_an_intent_its_task_was_not_submitted_for(
    start_service: StartService, emulator: EmulatorServer
) -> None:
    """The right secret and another task's delivery under a victim's intent_id: 400, the
    submission stays uncertain and the run paused (issue #15, point 3)."""
    service = start_service(public_url=None)  # submissions carry no webhook endpoint
    run_id, intent_id = paused_over_lost_answer(service, emulator)
    [task] = emulator.tasks()
    refused = hook(service, delivery(task), intent_id=intent_id)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "IntentMismatch"
    detail = service.settle(run_id)
    assert detail["run"]["status"] == "paused"
    assert detail["submissions"][0]["state"] == "uncertain"


@pytest.mark.parametrize("offset_hours", [-25, 25])
def test_deliveries_outside_the_window_are_refused(
    service: Service, emulator: EmulatorServer, offset_hours: int
) -> None:
    """A delivery dated more than 24 h from now (either way) settles nothing."""
    emulator.configure(webhook_faults={"drop_probability": 1.0})  # only our deliveries
    run_id, intent_id = paused_over_lost_answer(service, emulator)
    [task] = emulator.tasks()
    when = int(time.time()) + offset_hours * 3600
    refused = hook(service, delivery(task, timestamp=when), intent_id=intent_id)
    assert refused.status_code == 400, refused.text
    assert service.settle(run_id)["run"]["status"] == "paused"
    accepted = hook(service, delivery(task), intent_id=intent_id)
    assert accepted.json()["outcome"] == "delivered"
    assert service.finish(run_id)["run"]["status"] == "completed"


def test_a_delivery_is_answered_at_once_while_the_request_budget_is_spent(
    start_service: StartService, emulator: EmulatorServer
) -> None:
    """With the client's budget spent (1 request per 5 s) the delivery is still answered
    within PiAPI's 1 s timeout: its confirming GET comes after the answer, then ends the run's
    minute-long wait."""
    emulator.configure(webhook_timeout_seconds=1.0, webhook_max_attempts=1)
    service = start_service(
        wait_policy=SLOW_WAIT, client_options={"rate_limit": RateLimit(requests=1, per_seconds=5)}
    )
    service.publish()
    detail = service.finish(service.start(), timeout_seconds=30)
    assert detail["run"]["status"] == "completed", detail["run"]["message"]
    stats = emulator.stats()
    assert (stats["webhook_deliveries"], stats["webhook_failures"]) == (1, 0)
    assert (stats["creates"], stats["gets"]) == (1, 1)
