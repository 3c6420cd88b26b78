"""Steering decisions on a plain SQLite run log: what each command does, without DBOS."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from klingflow.emulator import EmulatorServer
from klingflow.errors import RunStateError
from klingflow.piapi import AsyncPiAPI, KlingVideoRequest, Task, TaskStatus
from klingflow.workflows.database import make_engine
from klingflow.workflows.executor import NodePaused
from klingflow.workflows.records import IntentState, NodeStatus, RunRecord, RunStatus
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.steering import (
    Action,
    Command,
    CommandRoute,
    PausedDecision,
    bind_webhook_task,
    decide_paused,
    describe_paused,
    is_settled_pause,
    resolve_pause,
    route_command,
    settle_webhook_cost,
)

UNCERTAIN: dict[str, Any] = {"type": "SubmitUncertainError", "message": "the answer was lost"}


@pytest.fixture
def runlog(tmp_path: Path) -> RunLog:
    return RunLog(make_engine(f"sqlite:///{tmp_path / 'runs.sqlite'}"))


def new_run(runlog: RunLog, tmp_path: Path) -> RunRecord:
    run, _ = runlog.create_run(
        workflow_name="steered",
        workflow_hash="h",
        workflow={"name": "steered", "nodes": []},
        source_path=None,
        trigger={},
        inputs={},
        output_root=str(tmp_path),
        budget_usd=None,
    )
    return run


def paused_on(runlog: RunLog, run: RunRecord, node: str, error: dict[str, Any]) -> RunRecord:
    """The run as the engine leaves it when `node` pauses with `error`."""
    runlog.node_started(
        run.run_id, run.epoch, node, node_id=node, node_type="kling.video", item_index=None,
        inputs={},
    )  # fmt: skip
    runlog.node_finished(run.run_id, run.epoch, node, status=NodeStatus.FAILED, error=error)
    runlog.set_status(run.run_id, RunStatus.PAUSED, message="paused", paused_node=node)
    record = runlog.get_run(run.run_id)
    assert record is not None
    return record


def uncertain_intent(runlog: RunLog, run: RunRecord, node: str, request: dict[str, Any]) -> str:
    """A create that left and whose answer was lost."""
    intent_id = runlog.reserve_and_record(
        run.run_id, run.epoch, node, request=request, estimated_usd=Decimal("0.5")
    )
    assert intent_id is not None
    runlog.mark_sent(intent_id)
    runlog.mark_uncertain(intent_id, note="no answer")
    return intent_id


def route(runlog: RunLog, run: RunRecord, command: Command, live: int = 0) -> CommandRoute:
    """Route `command` as the engine does, on the run as the run log has it now."""

    async def live_chunks() -> int:
        return live

    now = runlog.get_run(run.run_id)
    assert now is not None
    return asyncio.run(route_command(runlog, now, command, live_chunks=live_chunks))


def status_of(runlog: RunLog, run_id: str) -> RunStatus:
    record = runlog.get_run(run_id)
    assert record is not None
    return record.status


@pytest.mark.parametrize(
    ("action", "node", "decision"),
    [
        (Action.RETRY, "clip", PausedDecision.RESOLVE),
        (Action.SKIP, "clip", PausedDecision.RESOLVE),
        (Action.SKIP, "outputs", PausedDecision.COMPLETE_EMPTY),
        (Action.RESTART, "clip", PausedDecision.RESTART),
        (Action.CANCEL, "clip", PausedDecision.CANCEL),
    ],
)
def test_a_paused_run_acts_on_each_command(
    action: Action, node: str, decision: PausedDecision
) -> None:
    """Retry and skip change the run log, restart opens an epoch, cancel ends the run."""
    assert decide_paused(Command(action=action), node) is decision


def test_a_command_travels_as_a_plain_message_and_back() -> None:
    """DBOS carries the action's value; anything else on the topic is no command."""
    command = Command(action=Action.RETRY, resubmit=True, task_ids={"each[3].video": "t-3"})
    message = command.to_message()
    assert message["action"] == "retry"
    assert type(message["action"]) is str
    assert Command.from_message(message) == command
    assert Command.from_message({"wake": True}) is None
    assert Command.from_message("retry") is None


def test_the_paused_description_says_where_why_and_what_to_type(
    runlog: RunLog, tmp_path: Path
) -> None:
    """One line names the node, the reason and the retry command."""
    run = paused_on(runlog, new_run(runlog, tmp_path), "clip", UNCERTAIN)
    line = describe_paused(run)
    assert f"run {run.run_id} paused on clip: paused." in line
    assert f"klingflow runs retry {run.run_id}" in line


def test_retrying_a_paused_run_claims_it_once(runlog: RunLog, tmp_path: Path) -> None:
    """The first retry is sent to the run; a second (another click) is refused."""
    run = paused_on(runlog, new_run(runlog, tmp_path), "clip", UNCERTAIN)
    assert route(runlog, run, Command(action=Action.RETRY)) is CommandRoute.SEND_TO_PAUSED
    assert status_of(runlog, run.run_id) is RunStatus.QUEUED
    with pytest.raises(RunStateError, match="is queued, not paused: there is nothing to retry"):
        route(runlog, run, Command(action=Action.RETRY))


def test_cancel_stops_a_live_run_but_not_a_finished_one(runlog: RunLog, tmp_path: Path) -> None:
    """A running run's workflow is cancelled; a completed run refuses, unchanged."""
    run = new_run(runlog, tmp_path)
    runlog.set_status(run.run_id, RunStatus.RUNNING)
    assert route(runlog, run, Command(action=Action.CANCEL)) is CommandRoute.CANCEL_WORKFLOW
    runlog.set_status(run.run_id, RunStatus.COMPLETED, outputs={})
    done = runlog.get_run(run.run_id)
    assert done is not None
    with pytest.raises(RunStateError, match="already completed") as refused:
        route(runlog, done, Command(action=Action.CANCEL))
    assert refused.value.status == "completed"


def test_a_running_run_cannot_be_retried_or_skipped(runlog: RunLog, tmp_path: Path) -> None:
    """Only a paused (or crashed) run takes retry; skip needs a paused one."""
    run = new_run(runlog, tmp_path)
    runlog.set_status(run.run_id, RunStatus.RUNNING)
    for action in (Action.RETRY, Action.SKIP, Action.RESTART):
        with pytest.raises(RunStateError, match=f"is running, not paused: .* {action}"):
            route(runlog, run, Command(action=action))
    assert status_of(runlog, run.run_id) is RunStatus.RUNNING


def test_a_crashed_run_is_rerun_in_place_and_restart_opens_an_epoch(
    runlog: RunLog, tmp_path: Path
) -> None:
    """Retry keeps the epoch (finished nodes are reused); restart starts a new one."""
    run = new_run(runlog, tmp_path)
    runlog.set_status(run.run_id, RunStatus.CRASHED, message="boom")
    assert route(runlog, run, Command(action=Action.RETRY)) is CommandRoute.RERUN_CRASHED
    queued = runlog.get_run(run.run_id)
    assert queued is not None
    assert (queued.status, queued.epoch) == (RunStatus.QUEUED, run.epoch)

    runlog.set_status(run.run_id, RunStatus.CRASHED, message="boom again")
    assert route(runlog, run, Command(action=Action.RESTART)) is CommandRoute.RERUN_CRASHED
    restarted = runlog.get_run(run.run_id)
    assert restarted is not None
    assert restarted.epoch == run.epoch + 1


def test_a_crashed_run_with_live_loop_chunks_is_not_rerun(runlog: RunLog, tmp_path: Path) -> None:
    """Beside chunks still working, a rerun could submit an item twice: refused, unchanged."""
    run = new_run(runlog, tmp_path)
    runlog.set_status(run.run_id, RunStatus.CRASHED, message="boom")
    with pytest.raises(RunStateError, match="while 2 of its loop chunks still run"):
        route(runlog, run, Command(action=Action.RETRY), live=2)
    assert status_of(runlog, run.run_id) is RunStatus.CRASHED
    with pytest.raises(RunStateError, match="is crashed, not paused"):
        route(runlog, run, Command(action=Action.SKIP))


def test_skip_keeps_the_nodes_partial_output(runlog: RunLog, tmp_path: Path) -> None:
    """The skipped node's finished items stay its output; the next pass goes on from it."""
    error: dict[str, Any] = {
        "type": "LoopItemsFailedError",
        "message": "1 of 2 failed",
        "partial_output": [1],
    }
    run = paused_on(runlog, new_run(runlog, tmp_path), "each", error)
    paused = NodePaused("each", error)
    refusal = asyncio.run(
        resolve_pause(runlog, AsyncPiAPI(api_key="k"), run.run_id, run.epoch, paused,
                      Command(action=Action.SKIP))
    )  # fmt: skip
    assert refusal is None
    skipped = runlog.finished_nodes(run.run_id, run.epoch)["each"]
    assert skipped.status is NodeStatus.SKIPPED
    assert skipped.output == [1]


def test_resubmit_abandons_only_the_paused_nodes_uncertain_submissions(
    runlog: RunLog, tmp_path: Path
) -> None:
    """`retry --resubmit` gives up the node's (and its items') lost answers, no other node's."""
    run = paused_on(runlog, new_run(runlog, tmp_path), "each", UNCERTAIN)
    item = uncertain_intent(runlog, run, "each[0].video", {"prompt": "a"})
    other = uncertain_intent(runlog, run, "eachother", {"prompt": "b"})
    command = Command(action=Action.RETRY, resubmit=True)
    refusal = asyncio.run(
        resolve_pause(runlog, AsyncPiAPI(api_key="k"), run.run_id, run.epoch,
                      NodePaused("each", UNCERTAIN), command)
    )  # fmt: skip
    assert refusal is None
    states = {i.intent_id: i.state for i in runlog.intents(run.run_id)}
    assert states == {item: IntentState.ABANDONED, other: IntentState.UNCERTAIN}


def test_a_bare_task_id_for_two_uncertain_submissions_changes_nothing(
    runlog: RunLog, tmp_path: Path
) -> None:
    """With two lost answers, one bare id is ambiguous: refused with both paths named."""
    run = paused_on(runlog, new_run(runlog, tmp_path), "each", UNCERTAIN)
    uncertain_intent(runlog, run, "each[0].video", {"prompt": "a"})
    uncertain_intent(runlog, run, "each[1].video", {"prompt": "b"})
    command = Command(action=Action.RETRY, task_id="t-1")
    refusal = asyncio.run(
        resolve_pause(runlog, AsyncPiAPI(api_key="k"), run.run_id, run.epoch,
                      NodePaused("each", UNCERTAIN), command)
    )  # fmt: skip
    assert refusal is not None
    assert "each[0].video, each[1].video" in refusal
    assert "nothing was changed" in refusal
    assert {i.state for i in runlog.intents(run.run_id)} == {IntentState.UNCERTAIN}


def test_a_given_task_id_confirmed_at_piapi_settles_the_submission(
    runlog: RunLog, tmp_path: Path, emulator: EmulatorServer, api_key: str
) -> None:
    """The retry resumes with the user's task once PiAPI shows it is this very request;
    an id PiAPI does not know is refused."""

    async def scenario() -> tuple[str | None, str | None, str]:
        async with AsyncPiAPI(api_key=api_key, base_url=emulator.url) as client:
            task = await client.submit(KlingVideoRequest(prompt="a fox"))
            request = {"model": task.model, "task_type": task.task_type, "input": task.input}
            run = paused_on(runlog, new_run(runlog, tmp_path), "clip", UNCERTAIN)
            uncertain_intent(runlog, run, "clip", request)
            paused = NodePaused("clip", UNCERTAIN)
            unknown = Command(action=Action.RETRY, task_id="no-such-task")
            refused = await resolve_pause(runlog, client, run.run_id, run.epoch, paused, unknown)
            given = Command(action=Action.RETRY, task_id=task.task_id)
            taken = await resolve_pause(runlog, client, run.run_id, run.epoch, paused, given)
            return refused, taken, task.task_id

    refused, taken, task_id = asyncio.run(scenario())
    assert refused is not None
    assert "task no-such-task not confirmed" in refused
    assert taken is None
    owner = runlog.intent_for_task(task_id)
    assert owner is not None
    assert owner[1].state is IntentState.ACCEPTED


def test_a_webhook_naming_a_lost_answer_settles_it_and_lets_the_run_go_on(
    runlog: RunLog, tmp_path: Path
) -> None:
    """The webhook binds its task to the uncertain intent; the pause is then settled."""
    run = paused_on(runlog, new_run(runlog, tmp_path), "clip", UNCERTAIN)
    intent_id = uncertain_intent(runlog, run, "clip", {"prompt": "a fox"})
    assert not is_settled_pause(runlog, run.run_id)
    task = Task(task_id="t-9", status=TaskStatus.PROCESSING)

    assert bind_webhook_task(runlog, task, intent_id=intent_id) == run.run_id
    [intent] = runlog.intents(run.run_id)
    assert (intent.state, intent.task_id) == (IntentState.ACCEPTED, "t-9")
    assert is_settled_pause(runlog, run.run_id)
    assert bind_webhook_task(runlog, task, intent_id=intent_id) is None  # once
    assert bind_webhook_task(runlog, task, intent_id=None) is None


def test_a_webhook_for_a_completed_task_settles_its_cost(runlog: RunLog, tmp_path: Path) -> None:
    """A completed task's intent is closed as completed; a processing one is left open."""
    run = new_run(runlog, tmp_path)
    intent_id = uncertain_intent(runlog, run, "clip", {"prompt": "a fox"})
    bind_webhook_task(
        runlog, Task(task_id="t-7", status=TaskStatus.PROCESSING), intent_id=intent_id
    )
    asyncio.run(settle_webhook_cost(runlog, Task(task_id="t-7", status=TaskStatus.PROCESSING)))
    assert runlog.intents(run.run_id)[0].state is IntentState.ACCEPTED
    asyncio.run(settle_webhook_cost(runlog, Task(task_id="t-7", status=TaskStatus.COMPLETED)))
    assert runlog.intents(run.run_id)[0].state is IntentState.COMPLETED


def test_a_paused_node_with_other_failures_is_never_settled_by_webhooks(
    runlog: RunLog, tmp_path: Path
) -> None:
    """Only a pause over lost answers alone goes on by itself."""
    error: dict[str, Any] = {"type": "TaskFailedError", "message": "PiAPI failed the task"}
    run = paused_on(runlog, new_run(runlog, tmp_path), "clip", error)
    assert not is_settled_pause(runlog, run.run_id)
