"""Uncertain submissions of a loop settled by PiAPI's real webhooks: the run goes on alone.

The workflow makes one attempt per node, so no retry of the loop hides what the webhooks do.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from klingflow.emulator import EmulatorServer, FaultRule
from klingflow.piapi import PiAPI

from .conftest import Service

LOOP = """\
name: batch
retry: {attempts: 1}
inputs:
  prompts: {type: array, required: true}
nodes:
  - id: each
    type: loop
    with: {items: "{{ inputs.prompts }}", concurrency: 1}
    nodes:
      - id: video
        type: kling.video
        with: {prompt: "{{ item }}", download: false}
"""
PROMPTS = ["a red fox", "a paper boat", "sunflowers at dawn", "a kite over dunes"]


@pytest.mark.parametrize(
    ("webhook_delay", "processing"),
    # Emulated seconds at x1000. Items 0-1 lose their answers at once; items 2-3 then take
    # 1.5 s each, so with no delay the webhooks of 0-1 (sent when their task completes)
    # arrive while the loop still runs; with 1.5 s of delay they arrive after it paused.
    [(0, 1_500), (1_500, 1)],
    ids=["webhooks-before-the-pause", "webhooks-after-the-pause"],
)
def test_webhooks_settling_every_uncertain_item_resume_the_loop(
    service: Service, emulator: EmulatorServer, webhook_delay: float, processing: float
) -> None:
    """Two items' answers are lost; their webhooks (arriving while the loop still runs, or
    after it paused) settle them and the run completes without a human."""
    emulator.configure(
        webhook_faults={"delay_seconds": webhook_delay}, processing_seconds=processing
    )
    emulator.add_fault(
        FaultRule(action="drop", method="POST", path="/api/v1/task", phase="after", times=2)
    )
    service.publish(LOOP)
    run_id = service.start("batch", {"prompts": PROMPTS})
    detail = service.finish(run_id)
    assert detail["run"]["status"] == "completed", detail["run"]["message"]
    assert emulator.stats()["creates"] == len(PROMPTS)
    notes = sorted(s["note"] or "" for s in detail["submissions"])
    assert notes.count("reconciled by PiAPI's webhook") == 2
    assert all(s["state"] == "completed" for s in detail["submissions"])


def test_a_resubmitted_over_submission_is_charged_when_its_webhook_names_it(
    service: Service, emulator: EmulatorServer, api_key: str
) -> None:
    """The user resubmits before PiAPI's webhook arrives: both tasks exist and both are paid,
    and once the late webhook names the first, spent is exactly what PiAPI charged."""
    emulator.configure(webhook_faults={"delay_seconds": 3_000})  # 3 s: after the resubmit
    emulator.add_fault(FaultRule(action="drop", method="POST", path="/api/v1/task", phase="after"))
    service.publish()
    run_id = service.start()
    paused = service.settle(run_id)
    assert paused["run"]["status"] == "paused"
    response = service.http.post(f"/api/runs/{run_id}/retry", json={"resubmit": True})
    assert response.status_code == 200, response.text
    done = service.finish(run_id)
    assert done["run"]["status"] == "completed", done["run"]["message"]
    assert emulator.stats()["creates"] == 2
    deadline = time.monotonic() + 20
    while Decimal((detail := service.finish(run_id))["run"]["reserved_usd"]) != 0:
        assert time.monotonic() < deadline, detail["run"]
        time.sleep(0.05)
    spent = Decimal(detail["run"]["spent_usd"])
    with PiAPI(api_key=api_key, base_url=emulator.url) as client:
        charged = Decimal(str(client.account().model_dump()["spent_usd"]))
    assert spent == charged.quantize(spent) > 0
