"""Workflows run end to end on DBOS (SQLite) against the emulator: what a user checks."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import av
import pytest

from klingflow.emulator import EmulatorServer, FaultRule, GenerationError
from klingflow.errors import WorkflowInputError
from klingflow.piapi import Task
from klingflow.piapi.waiting import render_kind, typical_render_seconds
from klingflow.workflows import load_workflow, load_workflow_text
from klingflow.workflows.engine import Engine
from klingflow.workflows.records import IntentState, NodeStatus, RunRecord, RunStatus
from klingflow.workflows.steering import Action, Command

from .harness import Harness

EXAMPLES = Path(__file__).parents[2] / "examples"


def rows() -> list[dict[str, str]]:
    with (EXAMPLES / "prompts.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_seed_action_maps_trigger_fields_into_the_request(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """`{{ trigger.* }}` templates fill the seed's inputs; the run downloads the video."""
    payload = {
        "prompt": "a red fox",
        "duration": "10s",
        "model_name": "Kling V2.1",
        "aspect_ratio": "9:16",
    }
    run = harness.run(load_workflow(EXAMPLES / "seed-action.yaml"), payload)
    assert run.status == RunStatus.COMPLETED, run.message
    [task] = emulator.tasks()
    assert task["input"]["version"] == "2.1"
    assert task["input"]["duration"] == 10
    assert task["input"]["aspect_ratio"] == "9:16"
    nodes = {n.node_id: n for n in harness.runlog().nodes(run.run_id)}
    assert nodes["generate"].output["data"]["task_id"] == task["task_id"]
    assert nodes["generate"].inputs["request"]["prompt"] == "a red fox"
    assert str(run.spent_usd) == "0.52"


def test_batch_loop_makes_one_video_per_row_in_order(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """The loop runs every row, keeps item order, names files by row and stays in budget."""
    run = harness.run(load_workflow(EXAMPLES / "batch-from-csv.yaml"), {"rows": rows()})
    assert run.status == RunStatus.COMPLETED, run.message
    videos = run.outputs["videos"]
    assert [Path(v["video"]["path"]).name for v in videos] == [
        f"{n}-{row['slug']}.mp4" for n, row in enumerate(rows(), start=1)
    ]
    for video in videos:
        with av.open(video["video"]["path"]) as container:
            assert container.duration is not None
            assert round(container.duration / av.time_base) == 5
    assert emulator.stats()["creates"] == len(rows())
    assert emulator.stats()["peak_concurrency"] <= 5
    assert str(run.spent_usd) == "2.5"


def test_one_failed_item_pauses_the_loop_and_retry_redoes_only_that_item(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """Other items finish; the run pauses on the loop; a retry pays for the failed item only."""
    emulator.add_fault(
        FaultRule(
            action="fail_task",
            error=GenerationError(code=10002, message="content moderation", raw_message="nsfw"),
        )
    )
    workflow = load_workflow(EXAMPLES / "batch-from-csv.yaml")
    run = harness.run(workflow, {"rows": rows()})
    assert run.status == RunStatus.PAUSED
    assert run.paused_node == "each"
    assert "1 of 5 items" in (run.message or "")
    runlog = harness.runlog()
    failed = [
        n for n in runlog.nodes(run.run_id) if n.status == NodeStatus.FAILED and "[" in n.node_path
    ]
    assert len(failed) == 1
    assert failed[0].error is not None
    assert failed[0].error["code"] == 10002
    assert failed[0].error["raw_message"] == "nsfw"
    assert emulator.stats()["creates"] == 5

    resumed = harness.steer(run.run_id, Command(action=Action.RETRY))
    assert resumed.status == RunStatus.COMPLETED, resumed.message
    assert emulator.stats()["creates"] == 6
    assert all(v["video"]["status"] == "completed" for v in resumed.outputs["videos"])


def test_inputs_are_checked_before_anything_runs(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """A payload missing a required input is refused with a clear error; nothing is spent."""
    workflow = load_workflow(EXAMPLES / "batch-from-csv.yaml")
    with pytest.raises(WorkflowInputError, match=r"inputs\.rows: is required"):
        harness.run(workflow, {})
    assert emulator.stats()["create_requests"] == 0


def test_budget_pauses_the_run_before_paying_past_it(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """With $1 of budget, the third $0.50 video is never submitted; the run says why."""
    text = (EXAMPLES / "batch-from-csv.yaml").read_text().replace("budget_usd: 5", "budget_usd: 1")
    workflow_text = text.replace("concurrency: 5", "concurrency: 1")
    run = harness.run(workflow_text, {"rows": rows()})
    assert run.status == RunStatus.PAUSED
    assert emulator.stats()["creates"] == 2
    assert "budget" in (run.message or "")
    assert str(run.spent_usd) == "1"


RETRYING = """
name: retrying
retry: {attempts: 3, initial_delay_seconds: 0.05, factor: 2, max_delay_seconds: 1}
nodes:
  - id: call
    type: http.request
    with:
      url: "{{ trigger.url }}/account/info"
      headers: {x-api-key: node-secret-0042}
"""


def test_retryable_errors_back_off_and_every_attempt_is_logged(
    harness: Harness, emulator: EmulatorServer, api_key: str
) -> None:
    """Two 503s then success: three attempts, growing delays, errors kept, key redacted."""
    emulator.configure(api_keys=[api_key, "node-secret-0042"])
    emulator.add_fault(FaultRule(action="error", status=503, path="/account/info", times=2))
    run = harness.run(RETRYING, {"url": emulator.url})
    assert run.status == RunStatus.COMPLETED, run.message
    attempts = harness.runlog().attempts(run.run_id)
    assert [a.number for a in attempts] == [1, 2, 3]
    assert [a.error is not None for a in attempts] == [True, True, False]
    first, second = (a.retry_in_seconds or 0 for a in attempts[:2])
    assert 0.025 <= first <= 0.05
    assert 0.05 <= second <= 0.1
    assert attempts[0].error is not None
    assert attempts[0].error["code"] == 503
    node = harness.runlog().nodes(run.run_id)[0]
    assert node.inputs["headers"]["x-api-key"] == "***"
    assert "node-secret-0042" not in str(harness.runlog().nodes(run.run_id))


def test_out_of_attempts_pauses_then_skip_goes_on(
    harness: Harness, emulator: EmulatorServer, api_key: str
) -> None:
    """A node that keeps failing pauses the run; `skip` sets its output to null and goes on."""
    emulator.configure(api_keys=[api_key, "node-secret-0042"])
    emulator.add_fault(FaultRule(action="error", status=503, path="/account/info", times=None))
    run = harness.run(RETRYING, {"url": emulator.url})
    assert run.status == RunStatus.PAUSED
    assert run.paused_node == "call"
    assert len(harness.runlog().attempts(run.run_id)) == 3
    emulator.reset(keep_config=True)
    skipped = harness.steer(run.run_id, Command(action=Action.SKIP))
    assert skipped.status == RunStatus.COMPLETED
    assert harness.runlog().nodes(skipped.run_id)[0].status == NodeStatus.SKIPPED


def test_failed_generation_is_resubmitted_only_when_the_policy_says_so(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """retry_failed_generations: a failed task is paid again, and the run log shows both."""
    emulator.add_fault(FaultRule(action="fail_task"))
    text = (
        "name: regen\nretry: {attempts: 2, initial_delay_seconds: 0.01, "
        "retry_failed_generations: true}\nnodes:\n"
        "  - {id: clip, type: kling.video, with: {prompt: a fox, download: false}}\n"
    )
    run = harness.run(text)
    assert run.status == RunStatus.COMPLETED, run.message
    assert emulator.stats()["creates"] == 2
    intents = harness.runlog().intents(run.run_id)
    assert [i.state for i in intents] == [IntentState.FAILED, IntentState.COMPLETED]


def test_lost_create_response_pauses_as_uncertain_and_is_never_resent(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """PiAPI took the task but the answer was lost: pause, then settle with the task id."""
    emulator.add_fault(FaultRule(action="drop", method="POST", path="/api/v1/task", phase="after"))
    text = "name: once\nnodes:\n  - {id: clip, type: kling.video, with: {prompt: a fox}}\n"
    run = harness.run(text)
    assert run.status == RunStatus.PAUSED
    assert "may have been created" in (run.message or "")
    assert emulator.stats()["creates"] == 1
    [intent] = harness.runlog().intents(run.run_id)
    assert intent.state == IntentState.UNCERTAIN

    again = harness.steer(run.run_id, Command(action=Action.RETRY))
    assert again.status == RunStatus.PAUSED
    assert "will not pay twice" in (again.message or "")
    assert emulator.stats()["creates"] == 1

    [task] = emulator.tasks()
    done = harness.steer(run.run_id, Command(action=Action.RETRY, task_id=task["task_id"]))
    assert done.status == RunStatus.COMPLETED, done.message
    assert emulator.stats()["creates"] == 1


def test_idempotency_key_maps_to_one_run(harness: Harness, emulator: EmulatorServer) -> None:
    """Starting twice with the same key returns the first run and pays once."""
    text = "name: keyed\nnodes:\n  - {id: clip, type: kling.video, with: {prompt: a fox}}\n"
    first = harness.run(text, idempotency_key="order-17")
    second = harness.run(text, idempotency_key="order-17")
    assert first.run_id == second.run_id
    assert emulator.stats()["creates"] == 1


def test_restart_from_the_start_reruns_every_node(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """--from-start runs everything again in a new epoch (and pays again)."""
    text = (
        "name: two\nnodes:\n"
        "  - {id: first, type: kling.video, with: {prompt: one, download: false}}\n"
        "  - {id: second, type: kling.video, with: {prompt: two, download: false}}\n"
    )
    emulator.add_fault(FaultRule(action="fail_task", times=1))
    run = harness.run(text)
    assert run.status == RunStatus.PAUSED
    assert run.paused_node == "first"
    restarted = harness.steer(run.run_id, Command(action=Action.RESTART))
    assert restarted.status == RunStatus.COMPLETED, restarted.message
    assert restarted.epoch == 1
    assert emulator.stats()["creates"] == 3


def test_cancel_ends_a_paused_run(harness: Harness, emulator: EmulatorServer) -> None:
    """A paused run can be cancelled for good."""
    emulator.add_fault(FaultRule(action="fail_task"))
    text = "name: cancelme\nnodes:\n  - {id: clip, type: kling.video, with: {prompt: a fox}}\n"
    run = harness.run(text)
    assert run.status == RunStatus.PAUSED
    cancelled = harness.steer(run.run_id, Command(action=Action.CANCEL))
    assert cancelled.status == RunStatus.CANCELLED


def test_webhook_with_the_intent_id_settles_a_lost_answer(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """PiAPI's webhook names the intent; the paused run takes that task and pays nothing more."""
    emulator.add_fault(FaultRule(action="drop", method="POST", path="/api/v1/task", phase="after"))
    text = "name: hooked\nnodes:\n  - {id: clip, type: kling.video, with: {prompt: a fox}}\n"
    run = harness.run(text)
    assert run.status == RunStatus.PAUSED
    [intent] = harness.runlog().intents(run.run_id)
    [created] = emulator.tasks()

    async def webhook_arrives(engine: Engine) -> RunRecord:
        await engine.deliver_webhook(Task.model_validate(created), intent_id=intent.intent_id)
        [record] = await engine.wait([run.run_id], timeout_seconds=60)
        return record

    done = harness.session(webhook_arrives)
    assert done.status == RunStatus.COMPLETED, done.message
    assert emulator.stats()["creates"] == 1
    [settled] = harness.runlog().intents(run.run_id)
    assert settled.note == "reconciled by PiAPI's webhook"


def test_auth_errors_stop_at_once_without_retrying(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """A rejected key is not retryable: one attempt, then the run pauses."""
    emulator.configure(api_keys=["some-other-key"])
    text = (
        "name: auth\nretry: {attempts: 5, initial_delay_seconds: 0.01}\nnodes:\n"
        "  - {id: clip, type: kling.video, with: {prompt: a fox}}\n"
    )
    run = harness.run(text)
    assert run.status == RunStatus.PAUSED
    [attempt] = harness.runlog().attempts(run.run_id)
    assert attempt.error is not None
    assert attempt.error["type"] == "AuthenticationError"


def test_a_batch_never_trips_the_account_limits(harness: Harness, emulator: EmulatorServer) -> None:
    """With the account's limits configured, the emulator rejects nothing and never sees more,
    and the batch uses both slots. Each render takes 0.3 s (300 emulated seconds), so the
    second create lands while the first renders even on a loaded machine: with 62 ms renders
    the first once ended before the second began, under a profiler, and the peak read 1."""
    emulator.configure(concurrency_limit=2, over_concurrency="reject", processing_seconds=300)
    text = (EXAMPLES / "batch-from-csv.yaml").read_text()
    run = harness.run(text, {"rows": rows()}, client_limits={"max_concurrent_tasks": 2})
    assert run.status == RunStatus.COMPLETED, run.message
    assert emulator.stats()["rate_limited"] == 0
    assert emulator.stats()["peak_concurrency"] == 2


@pytest.mark.parametrize("found_by", ["launch", "key"])
def test_a_run_written_but_never_enqueued_still_runs_once(
    harness: Harness, emulator: EmulatorServer, found_by: str
) -> None:
    """A process that died between writing a run and enqueueing it loses nothing: the next
    engine's launch finds the queued run DBOS never received, and so does a caller that
    starts it again with its idempotency key (here written after this engine launched)."""
    workflow = load_workflow_text(
        "name: orphan\nnodes:\n  - {id: clip, type: kling.video, with: {prompt: a fox}}\n"
    )

    def write_only(engine: Engine) -> str:  # what the dead process managed to do
        run, created = engine.runlog.create_run(
            workflow_name=workflow.name,
            workflow_hash=workflow.content_hash,
            workflow=workflow.model_dump(mode="json", by_alias=True, exclude_unset=True),
            source_path=None,
            trigger={},
            inputs={},
            output_root=str(engine.settings.outputs_dir),
            budget_usd=None,
            idempotency_key="orphan-key",
        )
        assert created
        return run.run_id

    async def written(engine: Engine) -> str:
        return write_only(engine)

    run_id = harness.session(written) if found_by == "launch" else None

    async def relaunch(engine: Engine) -> RunRecord:
        nonlocal run_id
        if run_id is None:  # written after this engine launched: only its key can find it
            run_id = write_only(engine)
            again = await engine.start_run(workflow, {}, idempotency_key="orphan-key")
            assert again.run_id == run_id
        [done] = await engine.wait([run_id], timeout_seconds=60)
        return done

    done = harness.session(relaunch)
    assert done.status == RunStatus.COMPLETED, done.message
    assert emulator.stats()["creates"] == 1


def test_two_commands_for_one_paused_run_send_one(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """Two Retry clicks (or two processes) race for a paused run: the run log lets one
    through, so no second command lingers to retry, or resubmit, the run's next pause."""
    emulator.add_fault(FaultRule(action="fail_task"))
    text = "name: race\nnodes:\n  - {id: clip, type: kling.video, with: {prompt: a fox}}\n"
    run = harness.run(text)
    assert run.status == RunStatus.PAUSED
    runlog = harness.runlog()
    try:
        assert runlog.claim_paused(run.run_id, message="retry requested")
        assert not runlog.claim_paused(run.run_id, message="retry requested")
        assert runlog.get_run(run.run_id).status == RunStatus.QUEUED  # type: ignore[union-attr]
    finally:
        runlog.engine.dispose()


@pytest.mark.parametrize("stopped_while", ["generating", "sending"])
def test_an_engine_shut_down_mid_run_leaves_it_for_the_next_one(
    harness: Harness, emulator: EmulatorServer, stopped_while: str
) -> None:
    """Stopping a worker (Ctrl-C, a deploy) is not a crash: the run it was executing stays
    `running` and the next engine finishes it without paying for its video again, even when
    the stop came while PiAPI was still answering the create request."""
    if stopped_while == "sending":  # the task exists; its answer arrives after the stop began
        emulator.add_fault(
            FaultRule(action="slow", method="POST", path="/api/v1/task", phase="after")
        )
    else:
        emulator.configure(processing_seconds=1_500.0)  # 1.5 s of real time
    text = "name: slow\nnodes:\n  - {id: clip, type: kling.video, with: {prompt: a fox}}\n"

    async def start_and_stop(engine: Engine) -> str:
        run = await engine.start_run(load_workflow_text(text), {})
        while not emulator.tasks():
            await asyncio.sleep(0.01)
        return run.run_id

    run_id = harness.session(start_and_stop)
    stopped = harness.runlog().get_run(run_id)
    assert stopped is not None
    assert stopped.status == RunStatus.RUNNING, stopped.message

    async def resume(engine: Engine) -> RunRecord:
        [done] = await engine.wait([run_id], timeout_seconds=60)
        return done

    done = harness.session(resume)
    assert done.status == RunStatus.COMPLETED, done.message
    assert emulator.stats()["creates"] == 1


def test_render_times_learned_by_one_process_are_known_to_the_next(harness: Harness) -> None:
    """What a run's waits learned about a kind of render is kept in the home folder, so the
    next engine's first wait on that kind looks at the learned time, not the typical one."""
    clip = (
        "name: clip\nnodes:\n  - id: clip\n    type: kling.video\n"
        "    with: {prompt: a red fox, duration: 5, mode: std, version: '2.1', download: false}\n"
    )
    assert harness.run(clip).status == RunStatus.COMPLETED
    kind = render_kind({"duration": 5, "mode": "std", "version": "2.1"})

    async def learned(engine: Engine) -> float | None:
        return engine.client.render_times.learned(kind)

    assert (harness.home / "render-times.json").is_file()
    expected = harness.session(learned)
    assert expected is not None
    assert expected < typical_render_seconds({"duration": 5, "mode": "std"})
