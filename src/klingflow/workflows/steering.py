"""Steering runs: what retry, skip, restart and cancel do, decided here without DBOS.

A paused run is a DBOS workflow waiting for a message; a crashed one is a workflow DBOS
ended in error. The engine (the `engine` package) only carries out what this module decides:

- `route_command`: where a user's command goes, given the run's status: cancel the workflow,
  send the command to the paused run, or run a crashed one again in place; or why not
  (`RunStateError`). The run log's claims make two clicks (or two processes) act once.
- `decide_paused` and `resolve_pause`: what the paused run does with the command it got, and
  the run log's changes for retry and skip (uncertain submissions settled by the user's task
  ids or abandoned to resubmit, failed tasks reopened, a skipped node's partial output kept).
- `claim_if_settled`, `is_settled_pause` and `bind_webhook_task`: PiAPI's webhook names the
  task of a lost answer, and a run paused only over such answers then goes on by itself.

Everything here reads and writes the run log (and asks PiAPI about given task ids), so it is
tested on a plain SQLite run log (tests/workflows/test_steering.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from klingflow.errors import InvalidRequestError, RunStateError
from klingflow.piapi import AsyncPiAPI, Task
from klingflow.workflows.executor import NodePaused
from klingflow.workflows.failed_tasks import reopen_submitters
from klingflow.workflows.records import (
    TERMINAL_RUN_STATUSES,
    IntentState,
    NodeStatus,
    RunRecord,
    RunStatus,
)
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.uncertain import (
    ONLY_UNCERTAIN,
    is_settled,
    marked_uncertain_under,
    settle_uncertain,
)

__all__ = [
    "Action",
    "Command",
    "CommandRoute",
    "PausedDecision",
    "bind_webhook_task",
    "claim_if_settled",
    "decide_paused",
    "describe_paused",
    "is_settled_pause",
    "parse_task_ids",
    "resolve_pause",
    "route_command",
    "settle_webhook_cost",
]


class Action(StrEnum):
    """What a user tells a run to do (`klingflow runs retry|skip|cancel`, the API, the UI)."""

    RETRY = "retry"
    """Run the paused node again; finished nodes and paid submissions are kept."""
    SKIP = "skip"
    """Finish the paused node as skipped (its partial output, if any) and go on."""
    RESTART = "restart"
    """Start over in a new epoch (`retry --from-start`); earlier results are kept, unused."""
    CANCEL = "cancel"
    """Stop the run for good; tasks already submitted keep running at PiAPI."""


@dataclass(frozen=True)
class Command:
    """What a paused run is told to do; travels to its workflow as a plain JSON message."""

    action: Action
    resubmit: bool = False
    """Abandon the node's uncertain submissions and submit again (may pay twice)."""
    task_id: str | None = None
    """The task of the one uncertain submission (`--task-id ID`)."""
    task_ids: dict[str, str] | None = None
    """The task of each uncertain submission, by node path (`--task-id 'each[3].video=ID'`)."""

    def given_task_ids(self) -> dict[str, str]:
        """Every task id the user gave, by node path (`ONLY_UNCERTAIN` for a bare one)."""
        given = dict(self.task_ids or {})
        if self.task_id:
            given[ONLY_UNCERTAIN] = self.task_id
        return given

    def to_message(self) -> dict[str, Any]:
        """The message DBOS stores and delivers (portable JSON: the action as its value)."""
        return {**asdict(self), "action": self.action.value}

    @classmethod
    def from_message(cls, message: object) -> Command | None:
        """The command in a received message, or None for anything else on the topic."""
        if not isinstance(message, Mapping) or not message.get("action"):
            return None
        return cls(**{**message, "action": Action(message["action"])})


def parse_task_ids(values: Iterable[str]) -> dict[str, str]:
    """`["each[3].video=ID", ...]` -> {node path: task id}; a bare `ID` is `ONLY_UNCERTAIN`.

    Raises `InvalidRequestError` for an empty id, a node named twice, or a bare id mixed
    with named ones.
    """
    task_ids: dict[str, str] = {}
    for value in values:
        path, sep, task_id = value.strip().rpartition("=")
        path, task_id = path.strip(), task_id.strip()
        if not task_id or (sep and not path):
            problem = f"expected NODE_PATH=ID or ID, got {value!r}"
            raise InvalidRequestError([("--task-id", problem)])
        if path in task_ids:
            raise InvalidRequestError([("--task-id", f"{path or 'a bare id'} is given twice")])
        task_ids[path] = task_id
    if ONLY_UNCERTAIN in task_ids and len(task_ids) > 1:
        raise InvalidRequestError(
            [("--task-id", "give either one bare ID or NODE_PATH=ID for each submission")]
        )
    return task_ids


def describe_paused(run: RunRecord) -> str:
    """One line for a paused run: where and why, and what to type next."""
    return (
        f"run {run.run_id} paused on {run.paused_node}: {run.message}. "
        f"Retry with `klingflow runs retry {run.run_id}` (or skip / cancel)."
    )


# -- a user's command, outside the run -------------------------------------------------------


class CommandRoute(StrEnum):
    """How the engine carries a command to its run (decided by `route_command`)."""

    CANCEL_WORKFLOW = "cancel_workflow"
    """Cancel the run's workflow (queued, running or paused), then mark it cancelled."""
    SEND_TO_PAUSED = "send_to_paused"
    """The run waits for a command: send it (the run log already says so)."""
    RERUN_CRASHED = "rerun_crashed"
    """DBOS ended the workflow in error: run it again from its first step, in place."""


async def route_command(
    runlog: RunLog,
    run: RunRecord,
    command: Command,
    *,
    live_chunks: Callable[[], Awaitable[int]],
) -> CommandRoute:
    """Where `command` goes for `run`, claiming the run in the run log; or `RunStateError`.

    A paused run is claimed with one atomic update, so of two clicks (or two processes) one
    is sent and the other refused. A crashed run is run again only when none of its loop
    chunks still works (`live_chunks` counts them): beside them, an item could be submitted
    twice. Finished nodes come back from the run log and paid submissions from their
    intents, so rerunning a crashed run resumes it; `restart` opens a new epoch first.
    """
    run_id, status = run.run_id, run.status.value
    if command.action is Action.CANCEL:
        if run.status in TERMINAL_RUN_STATUSES:
            raise RunStateError(f"run {run_id} is already {status}", run_id=run_id, status=status)
        return CommandRoute.CANCEL_WORKFLOW
    if runlog.claim_paused(run_id, message=f"{command.action} requested"):
        return CommandRoute.SEND_TO_PAUSED
    if command.action in (Action.RETRY, Action.RESTART) and run.status is RunStatus.CRASHED:
        if live := await live_chunks():
            raise RunStateError(
                f"run {run_id} crashed while {live} of its loop chunks still run; retry "
                "once they have finished (a worker finishes them)",
                run_id=run_id,
                status=RunStatus.CRASHED.value,
            )
        if runlog.claim_crashed(run_id, message=f"{command.action} of a crashed run requested"):
            if command.action is Action.RESTART:
                runlog.new_epoch(run_id)
            return CommandRoute.RERUN_CRASHED
    # not paused, or another command (another click, another process) came first
    now = runlog.get_run(run_id)
    status = now.status.value if now is not None else status
    raise RunStateError(
        f"run {run_id} is {status}, not paused: there is nothing to {command.action}",
        run_id=run_id,
        status=status,
    )


# -- the command, inside the paused run ------------------------------------------------------


class PausedDecision(StrEnum):
    """What a paused run does with the command it received (`decide_paused`)."""

    CANCEL = "cancel"
    """End the run as cancelled."""
    COMPLETE_EMPTY = "complete_empty"
    """Skipping the `outputs` step ends the run completed, with no outputs."""
    RESTART = "restart"
    """Open a new epoch and run every node again."""
    RESOLVE = "resolve"
    """Apply retry's or skip's changes to the run log (`resolve_pause`), then go on."""


def decide_paused(command: Command, paused_node: str) -> PausedDecision:
    """What the run paused on `paused_node` does with `command`."""
    if command.action is Action.CANCEL:
        return PausedDecision.CANCEL
    if command.action is Action.SKIP and paused_node == "outputs":
        return PausedDecision.COMPLETE_EMPTY
    if command.action is Action.RESTART:
        return PausedDecision.RESTART
    return PausedDecision.RESOLVE


async def resolve_pause(
    runlog: RunLog,
    client: AsyncPiAPI,
    run_id: str,
    epoch: int,
    paused: NodePaused,
    command: Command,
) -> str | None:
    """Apply retry's or skip's decisions to the run log; a refusal says why not.

    Given task ids settle the node's uncertain submissions (all or none, `settle_uncertain`);
    else `resubmit` abandons them so the node pays again. A retry reopens the submitters of
    failed tasks (a failed task is retried as a new task); a skip finishes the node as
    skipped with whatever partial output it had (a loop's finished items).
    """
    prefix = paused.node_path
    uncertain = marked_uncertain_under(runlog, run_id, epoch, prefix)
    if given := command.given_task_ids():
        refusal = await settle_uncertain(runlog, client, uncertain, given)
        if refusal is not None:
            return refusal
    elif command.resubmit:
        for intent in uncertain:
            runlog.abandon_intent(intent.intent_id, note="user chose to resubmit")
    if command.action is Action.RETRY:
        reopen_submitters(runlog, run_id, epoch, prefix)
    if command.action is Action.SKIP:
        partial = paused.error.get("partial_output")
        runlog.node_finished(run_id, epoch, prefix, status=NodeStatus.SKIPPED, output=partial)
    return None


# -- PiAPI's webhook settles lost answers ----------------------------------------------------


def claim_if_settled(runlog: RunLog, run_id: str, epoch: int, paused: NodePaused) -> bool:
    """Claim the run for a retry when webhooks settled its uncertain submissions before it
    paused (see `is_settled_pause`): then it retries without waiting for a human."""
    return is_settled(
        runlog, run_id, epoch, paused.node_path, paused.error
    ) and runlog.claim_paused(run_id, message="settled by PiAPI's webhook")


def is_settled_pause(runlog: RunLog, run_id: str) -> bool:
    """Whether a run is paused only over uncertain submissions and none is left uncertain.

    Checked after a webhook settles one. A run that pauses just after this looked (the
    webhook came while the loop still ran) checks the same itself once it has paused
    (`claim_if_settled`), so one of the two always sees the other's write; claiming the
    paused run lets only one act.
    """
    run = runlog.get_run(run_id)
    if run is None or run.status != RunStatus.PAUSED or run.paused_node is None:
        return False
    node = next(
        (n for n in runlog.nodes(run.run_id, run.epoch) if n.node_path == run.paused_node),
        None,
    )
    error = None if node is None else node.error
    return is_settled(runlog, run_id, run.epoch, run.paused_node, error)


def bind_webhook_task(runlog: RunLog, task: Task, *, intent_id: str | None) -> str | None:
    """Record what a verified webhook proves about the submission `intent_id` names.

    `intent_id` comes from the webhook URL klingflow gave PiAPI. A submission still without
    a task (its answer on the way, or lost) gets this task; returns its run's id, which may
    now go on (`is_settled_pause`). An abandoned one (resubmitted over, yet PiAPI made it)
    gets what it cost once the task has ended.
    """
    if intent_id is None or (found := runlog.intent_by_id(intent_id)) is None:
        return None
    run_id, intent = found
    # SENT: the answer may still be on its way, or lost; either way this is the task.
    if intent.state in (IntentState.SENT, IntentState.UNCERTAIN) and not intent.task_id:
        runlog.update_intent(
            intent_id,
            IntentState.ACCEPTED,
            task_id=task.task_id,
            note="reconciled by PiAPI's webhook",
        )
        return run_id
    if intent.state is IntentState.ABANDONED and task.is_terminal:
        spent = task.meta.usage.consume
        runlog.settle_abandoned(intent_id, task_id=task.task_id, spent_points=spent)
    return None


async def settle_webhook_cost(runlog: RunLog, task: Task) -> None:
    """Settle what a completed task cost, even when no node waits for it (a lone
    `kling.generate_video`); a waiting node's own settle then finds it done. A failed task
    is left to its node, whose retry policy decides what comes next.

    It commits with the run log's other queued writes (group commit), where the waiting
    node's own settle of the same intent goes: in a transaction of its own, on a second
    connection, the two took the intent's row lock in turn, and the node's end waited."""
    if task.status == "completed":  # (a task no intent holds, or settled already: nothing)
        spent = task.meta.usage.consume
        await runlog.finish_intent_soon(task.task_id, IntentState.COMPLETED, spent_points=spent)
