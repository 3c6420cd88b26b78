"""Retrying a node whose PiAPI task failed submits a new task, whichever node sent the first."""

from __future__ import annotations

from pathlib import Path

from klingflow.emulator import EmulatorServer, FaultRule
from klingflow.workflows import load_workflow
from klingflow.workflows.records import IntentState, RunStatus
from klingflow.workflows.steering import Action, Command

from .harness import Harness

EXAMPLES = Path(__file__).parents[2] / "examples"
SEED = {"prompt": "a red fox", "duration": "5s"}

LOOP = """\
name: split-loop
inputs:
  prompts: {type: array, required: true}
nodes:
  - id: each
    type: loop
    with: {items: "{{ inputs.prompts }}", concurrency: 2}
    nodes:
      - id: generate
        type: kling.generate_video
        with: {prompt: "{{ item }}"}
      - id: wait
        type: kling.wait
        with: {task_id: "{{ nodes.generate.output.data.task_id }}"}
"""


def test_seed_retry_after_a_failed_task_submits_exactly_one_new_task(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """The seed pauses on `wait`; Retry re-runs `generate`: one new task, then completed."""
    emulator.add_fault(FaultRule(action="fail_task", times=1))
    run = harness.run(load_workflow(EXAMPLES / "seed-action.yaml"), SEED)
    assert run.status == RunStatus.PAUSED
    assert run.paused_node == "wait"
    assert emulator.stats()["creates"] == 1

    resumed = harness.steer(run.run_id, Command(action=Action.RETRY))
    assert resumed.status == RunStatus.COMPLETED, resumed.message
    assert emulator.stats()["creates"] == 2
    first, second = harness.runlog().intents(run.run_id)
    assert first.state is IntentState.FAILED
    assert "submits a new task" in (first.note or "")
    assert second.state is IntentState.COMPLETED
    assert resumed.outputs["task_id"] == second.task_id != first.task_id


def test_a_failed_task_in_a_loop_item_is_resubmitted_for_that_item_only(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """Only the failed item's `generate` submits again: creates goes from 3 to 4."""
    emulator.add_fault(FaultRule(action="fail_task", times=1))
    run = harness.run(LOOP, {"prompts": ["one", "two", "three"]})
    assert run.status == RunStatus.PAUSED
    assert emulator.stats()["creates"] == 3

    resumed = harness.steer(run.run_id, Command(action=Action.RETRY))
    assert resumed.status == RunStatus.COMPLETED, resumed.message
    assert emulator.stats()["creates"] == 4


def test_an_uncertain_submission_is_not_resubmitted_by_a_plain_retry(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """The guarded flow stays: a lost answer is never resent by Retry alone."""
    emulator.add_fault(FaultRule(action="drop", method="POST", path="/api/v1/task", phase="after"))
    run = harness.run(load_workflow(EXAMPLES / "seed-action.yaml"), SEED)
    assert run.status == RunStatus.PAUSED
    again = harness.steer(run.run_id, Command(action=Action.RETRY))
    assert again.status == RunStatus.PAUSED
    assert emulator.stats()["creates"] == 1
