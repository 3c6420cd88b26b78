"""A batch at the account's pace (issue 17): requests counted, not timed.

The scenario users measured: a 20-item loop of `kling.video` against an account that runs 5
tasks at once (emulator `concurrency_limit: 5`, 32 s per video), default settings (5 tasks at
once, 60 requests/min, first look after 5 s), all of it 16 times faster (8 with webhooks).
Each video's status GETs, the creates and the webhook deliveries are counted by the emulator.
"""

from __future__ import annotations

from typing import Any

import pytest

from klingflow.emulator import EmulatorServer
from klingflow.piapi import WaitPolicy

from .conftest import StartService

SPEED = 16.0
WEBHOOKS_SPEED = 8.0
"""With webhooks, 8 times faster: the safety net's first look comes at twice the learned
render time (2 s of real time at 16x), and a delivery's way to the run log does not speed up
with the clock. Under CI's load one video's took over 2 s, and it was looked at again: what
the safety net is for, had the webhook really come 32 emulated seconds late. At 8x the way
may take 4 s."""
VIDEOS = 20
BATCH = """\
name: batch
inputs:
  prompts: {type: array, required: true}
nodes:
  - id: each
    type: loop
    with: {items: "{{ inputs.prompts }}", concurrency: 20}
    nodes:
      - id: video
        type: kling.video
        with: {prompt: "{{ item }}", duration: 5, mode: std, version: "2.1", download: false}
"""


def run_batch(
    start_service: StartService, emulator: EmulatorServer, speed: float, **overrides: Any
) -> None:
    """Run the scenario's batch, `speed` times faster, to completion on a service with
    `overrides` as settings."""
    emulator.configure(
        time_scale=speed, pending_seconds=2, processing_seconds=30, concurrency_limit=5
    )
    service = start_service(
        # The engine's defaults, sped up like the emulator.
        wait_policy=WaitPolicy(initial_interval_seconds=5.0 / speed, time_scale=speed),
        client_options={"max_concurrent_tasks": 5, "requests_per_minute": int(60 * speed)},
        **overrides,
    )
    service.publish(BATCH)
    prompts = [f"video {number}" for number in range(VIDEOS)]
    run_id = service.start("batch", {"prompts": prompts})
    detail = service.finish(run_id, timeout_seconds=90)
    assert detail["run"]["status"] == "completed", detail["run"]["message"]


@pytest.mark.parametrize("webhooks", [False, True], ids=["polling", "webhooks"])
def test_a_batch_spends_few_status_gets_per_video(
    start_service: StartService, emulator: EmulatorServer, webhooks: bool
) -> None:
    """Polling costs at most 3 status GETs per video, webhooks at most 1 (the confirming
    GET) with every delivery answered at once; every video is created exactly once."""
    if webhooks:
        run_batch(start_service, emulator, WEBHOOKS_SPEED)
    else:
        run_batch(start_service, emulator, SPEED, public_url=None, webhook_secret=None)
    stats = emulator.stats()
    assert (stats["creates"], stats["create_requests"]) == (VIDEOS, VIDEOS)
    assert stats["rate_limited"] == 0
    per_video = [counters["gets"] for counters in stats["tasks"].values()]
    assert len(per_video) == VIDEOS
    if webhooks:
        assert stats["gets"] <= VIDEOS, per_video
        assert stats["webhook_deliveries"] == VIDEOS
        assert stats["webhook_failures"] == 0
    else:
        assert stats["gets"] <= 3 * VIDEOS, per_video
        assert stats["webhook_deliveries"] == 0
