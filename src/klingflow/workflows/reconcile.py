"""Settling uncertain submissions: by PiAPI's webhook, or by task ids a user found.

A create whose answer was lost may have made a paid task. PiAPI's webhook names it (the
intent id is in the webhook URL); once every uncertain submission a node paused over is
settled that way, the run goes on by itself (`is_settled`). Or the user looks the tasks up
in PiAPI's task list and gives their ids, per item of a loop (`each[3].video=ID`). Each id
is taken only once PiAPI confirms the task exists and it is the very request the intent
recorded (model, task type and every input field equal), and only when every given id
passes: a typo never binds one item and leaves the others half done.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from klingflow.errors import InvalidRequestError, PiAPIError
from klingflow.piapi import AsyncPiAPI, Task
from klingflow.workflows.records import Intent, IntentState
from klingflow.workflows.runlog import RunLog

__all__ = [
    "ONLY_UNCERTAIN",
    "is_settled",
    "parse_task_ids",
    "settle_uncertain",
    "task_mismatch",
    "uncertain_under",
]

ONLY_UNCERTAIN = ""
"""The key of a bare `--task-id ID`: the run's one uncertain submission."""


def uncertain_under(runlog: RunLog, run_id: str, epoch: int, node_path: str) -> list[Intent]:
    """The node's (or its loop items') submissions whose outcome nobody knows yet."""
    return [
        intent
        for intent in runlog.intents(run_id, epoch=epoch)
        if (intent.node_path == node_path or intent.node_path.startswith(node_path + "["))
        and not intent.task_id
        and intent.state in (IntentState.SENT, IntentState.UNCERTAIN)
    ]


def is_settled(runlog: RunLog, run_id: str, epoch: int, node_path: str, error: Any) -> bool:
    """Whether a node that paused *only* over uncertain submissions has none left: then a
    retry pays nothing new and loses nothing, so the run may take it without a human."""
    if not isinstance(error, Mapping):
        return False
    failures = list((error.get("failed_items") or {}).values()) or [error]
    if not all(failure.get("type") == "SubmitUncertainError" for failure in failures):
        return False
    return not uncertain_under(runlog, run_id, epoch, node_path)


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


def task_mismatch(request: Mapping[str, Any], task: Task) -> str | None:
    """Why `task` is not the submission of `request` (the recorded body), or None."""
    differences = [
        name
        for name, sent, found in (
            ("model", request.get("model"), task.model),
            ("task_type", request.get("task_type"), task.task_type),
        )
        if sent is not None and sent != found
    ]
    for name, sent in (request.get("input") or {}).items():
        if task.input.get(name) != sent:
            differences.append(f"input.{name}")
    return ", ".join(differences) or None


async def settle_uncertain(
    runlog: RunLog,
    client: AsyncPiAPI,
    uncertain: list[Intent],
    task_ids: Mapping[str, str],
) -> str | None:
    """Bind each given task id to its uncertain intent, or change nothing and say why."""
    if ONLY_UNCERTAIN in task_ids:
        if len(uncertain) != 1:
            paths = ", ".join(i.node_path for i in uncertain) or "none"
            return (
                f"a bare --task-id settles exactly one uncertain submission, and there are "
                f"{len(uncertain)} ({paths}): give NODE_PATH=ID for each; nothing was changed"
            )
        task_ids = {uncertain[0].node_path: task_ids[ONLY_UNCERTAIN]}
    by_path = {intent.node_path: intent for intent in uncertain}
    unknown = [path for path in task_ids if path not in by_path]
    if unknown:
        paths = ", ".join(by_path) or "none"
        return (
            f"no uncertain submission on {', '.join(unknown)} (uncertain: {paths}); "
            "nothing was changed"
        )
    if len(set(task_ids.values())) != len(task_ids):
        return "one task id is given for two submissions; nothing was changed"
    for path, task_id in task_ids.items():
        refusal = await _confirm(runlog, client, by_path[path], task_id)
        if refusal is not None:
            return f"{path}: {refusal}; nothing was changed"
    for path, task_id in task_ids.items():
        runlog.update_intent(
            by_path[path].intent_id,
            IntentState.ACCEPTED,
            task_id=task_id,
            note="task id given by the user, confirmed at PiAPI",
        )
    return None


async def _confirm(runlog: RunLog, client: AsyncPiAPI, intent: Intent, task_id: str) -> str | None:
    owner = runlog.intent_for_task(task_id)
    if owner is not None:
        return f"task {task_id} already belongs to {owner[1].node_path} of run {owner[0]}"
    try:
        task = await client.get(task_id)
    except PiAPIError as error:
        return f"task {task_id} not confirmed ({error})"
    mismatch = task_mismatch(runlog.intent_request(intent.intent_id), task)
    if mismatch is not None:
        return f"task {task_id} is not this submission (it differs in {mismatch})"
    return None
