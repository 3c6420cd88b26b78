"""A submission another process sent first is never sent again (two workers on one run)."""

from __future__ import annotations

import asyncio
from typing import Any

from klingflow.emulator import EmulatorServer
from klingflow.piapi import AsyncPiAPI
from klingflow.workflows import load_workflow_text
from klingflow.workflows.engine import Engine
from klingflow.workflows.records import IntentState, RunStatus

from ..policies import FAST_RETRY
from .harness import Harness, video_loop


def test_an_intent_sent_by_another_process_is_answered_with_its_task_not_sent_again(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """A worker that took over a run still alive (its heartbeat late under load) replayed
    a node whose intent the first worker had recorded and was about to send: both sent it,
    two paid tasks for one video (62 creates for 60 in a scale-out test). Here the second
    item's intent waits for the client's one task slot while "another worker" sends it and
    records its task id: this worker takes that task and sends nothing."""
    emulator.configure(pending_seconds=0, processing_seconds=1.5)
    spec = load_workflow_text(video_loop("elsewhere", concurrency=2))

    async def work(engine: Engine) -> tuple[Any, str]:
        run = await engine.start_run(spec, {"prompts": ["a fox", "a whale"]})
        runlog = engine.runlog
        for _ in range(400):  # the second item's intent, recorded, waiting for the slot
            intents = runlog.intents(run.run_id)  # (the first's sent: both prepared at first)
            waiting = [i for i in intents if i.state is IntentState.PREPARED]
            if len(intents) == 2 and len(waiting) == 1:
                break
            await asyncio.sleep(0.02)
        [intent] = waiting
        # The other worker: it marks the intent sent, creates the task, records its id.
        runlog.mark_sent(intent.intent_id)
        async with AsyncPiAPI(
            api_key=harness.api_key, base_url=emulator.url, retry_policy=FAST_RETRY
        ) as other:
            task = await other.submit(runlog.intent_request(intent.intent_id))
        runlog.accept_intent(
            intent.intent_id,
            run_id=run.run_id,
            epoch=0,
            node_path=intent.node_path,
            task_id=task.task_id,
        )
        [record] = await engine.wait([run.run_id], timeout_seconds=60)
        return record, task.task_id

    record, other_task = harness.session(work, client_limits={"max_concurrent_tasks": 1})
    assert record.status is RunStatus.COMPLETED, record.message
    assert emulator.stats()["creates"] == 2  # the first item's, and the other worker's
    task_ids = {i.task_id for i in harness.runlog().intents(record.run_id)}
    assert other_task in task_ids
    assert len(task_ids) == 2
