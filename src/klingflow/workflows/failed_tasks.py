"""Retrying a node whose PiAPI task *failed* means a new task, even when another node sent it.

In the seed's shape, `kling.generate_video` submits and a later `kling.wait` waits: when PiAPI
fails the task, the run pauses on the wait node, and re-running only that node would wait on
the same failed task for ever. PiAPI does not charge a failed task, and its intent is already
closed as `failed`, so the node that submitted it may safely submit again: `reopen_submitters`
marks it failed too, and the retry runs it (a new intent, with its own estimate) before the
wait. An *uncertain* submission is never touched here: it keeps its guarded flow.
"""

from __future__ import annotations

import sqlalchemy as sa

from klingflow.workflows.records import Intent, IntentState, NodeRun, NodeStatus
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.schema import node_runs

__all__ = ["failed_task_intents", "reopen_submitters"]


def _failed_nodes(runlog: RunLog, run_id: str, epoch: int, prefix: str) -> list[NodeRun]:
    """The failed nodes at `prefix` and under it (a loop's items), in one query: a paused
    loop of 10,000 items has few of them."""
    query = node_runs.select().where(
        node_runs.c.run_id == run_id,
        node_runs.c.epoch == epoch,
        node_runs.c.status == NodeStatus.FAILED.value,
        sa.or_(
            node_runs.c.node_path == prefix,
            node_runs.c.node_path.startswith(prefix + "[", autoescape=True),
        ),
    )
    return runlog.node_runs(query.order_by(node_runs.c.id))


def failed_task_intents(runlog: RunLog, run_id: str, epoch: int, prefix: str) -> list[Intent]:
    """The failed PiAPI tasks that paused `prefix` (a node, or a loop's items): a retry
    submits each of them again, as a new task with the same estimate."""
    failed = _failed_nodes(runlog, run_id, epoch, prefix)
    if not failed:
        return []
    by_task: dict[str, Intent] = {}
    for node in failed:  # the intent of each failed task: one indexed look-up each
        task_id = (node.error or {}).get("task_id")
        owned = runlog.intent_for_task(task_id) if isinstance(task_id, str) else None
        if owned is not None and owned[0] == run_id:
            by_task[owned[1].task_id or ""] = owned[1]
    found: list[Intent] = []
    for node in failed:
        error = node.error or {}
        intent = by_task.get(error.get("task_id") or "")
        if error.get("type") != "TaskFailedError" or intent is None or intent in found:
            continue
        if intent.state is IntentState.FAILED:  # never an uncertain one
            found.append(intent)
    return found


def reopen_submitters(runlog: RunLog, run_id: str, epoch: int, prefix: str) -> list[Intent]:
    """Mark the nodes that submitted the failed tasks under `prefix` as failed, so a retry
    runs them again (the node that failed is re-run anyway); returns those failed intents."""
    failed = failed_task_intents(runlog, run_id, epoch, prefix)
    finished = runlog.finished_nodes(run_id, epoch)
    for intent in failed:
        note = f"task {intent.task_id} failed at PiAPI (not charged); the retry submits a new task"
        runlog.update_intent(intent.intent_id, IntentState.FAILED, note=note)
        if intent.node_path in finished:  # a kling.generate_video that "succeeded" at sending
            runlog.node_finished(
                run_id,
                epoch,
                intent.node_path,
                status=NodeStatus.FAILED,
                error={"type": "TaskFailedError", "message": note, "task_id": intent.task_id},
            )
    return failed
