"""Uncertain submissions: where to look for the task one may have made, and how it is settled.

A create request that got no answer may or may not have made a (paid) task. klingflow never
resends it on its own. What a person needs to find the task: the intent id, the window in
which PiAPI would have created it (from the moment the request left until the client gave
up, a minute either side for clocks), the prompt, and the webhook URL that carries the
intent id (`uncertain_hint`, `uncertain_submissions`).

It is settled in one of two ways. PiAPI's webhook names the task (the intent id is in the
webhook URL); once every uncertain submission a node paused over is settled that way, the
run goes on by itself (`is_settled`). Or the user looks the tasks up in PiAPI's task list and
gives their ids, per item of a loop (`each[3].video=ID`). Each id is taken only once PiAPI
confirms the task exists and it is the very request the intent recorded (model, task type
and every input field equal), and only when every given id passes: a typo never binds one
item and leaves the others half done (`settle_uncertain`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from klingflow.errors import PiAPIError
from klingflow.piapi import AsyncPiAPI, Task
from klingflow.piapi._wire import with_intent_id
from klingflow.workflows.records import Intent, IntentState
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.schema import intents

__all__ = [
    "ONLY_UNCERTAIN",
    "SKEW_SECONDS",
    "UncertainSubmission",
    "is_settled",
    "is_under",
    "marked_uncertain_under",
    "settle_uncertain",
    "task_mismatch",
    "uncertain_hint",
    "uncertain_submissions",
    "uncertain_under",
]

SKEW_SECONDS = 60.0
"""Added on both sides of the window: PiAPI's clock and ours may differ a little."""


def _utc(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class UncertainSubmission:
    """An uncertain submission and where to look for its task."""

    intent_id: str
    node_path: str
    sent_at: float
    window_start: float
    window_end: float
    prompt: str | None
    webhook_url: str | None

    @property
    def window(self) -> str:
        """When to look in PiAPI's task list, in UTC as its dashboard shows times."""
        return f"{_utc(self.window_start)} to {_utc(self.window_end)}"


def _find(
    intent_id: str, sent_at: float, timeout_seconds: float, webhook_endpoint: str | None
) -> tuple[float, float, str | None]:
    start, end = sent_at - SKEW_SECONDS, sent_at + timeout_seconds + SKEW_SECONDS
    return start, end, webhook_endpoint and with_intent_id(webhook_endpoint, intent_id)


def uncertain_hint(
    intent_id: str, *, sent_at: float, timeout_seconds: float, webhook_endpoint: str | None
) -> str:
    """One sentence for an error message: where and when to look for the task."""
    start, end, url = _find(intent_id, sent_at, timeout_seconds, webhook_endpoint)
    hint = f"look in PiAPI's task list for a task created from {_utc(start)} to {_utc(end)}"
    if url:
        hint += f" (PiAPI's webhook for it goes to {url} and settles it by itself)"
    return hint


def uncertain_submissions(
    runlog: RunLog,
    run_id: str,
    epoch: int,
    *,
    timeout_seconds: float,
    webhook_endpoint: str | None,
) -> list[UncertainSubmission]:
    """The run's uncertain submissions (this epoch), oldest first, with where to look."""
    query = (
        intents.select()
        .where(
            intents.c.run_id == run_id,
            intents.c.epoch == epoch,
            intents.c.state == IntentState.UNCERTAIN.value,
        )
        .order_by(intents.c.created_at)
    )
    rows = runlog.read(lambda c: list(c.execute(query)))
    found = []
    for row in rows:
        start, end, url = _find(row.intent_id, row.created_at, timeout_seconds, webhook_endpoint)
        request = row.request if isinstance(row.request, dict) else {}
        prompt = (
            request.get("input", {}).get("prompt")
            if isinstance(request.get("input"), dict)
            else request.get("prompt")
        )
        found.append(
            UncertainSubmission(
                intent_id=row.intent_id,
                node_path=row.node_path,
                sent_at=row.created_at,
                window_start=start,
                window_end=end,
                prompt=prompt if isinstance(prompt, str) else None,
                webhook_url=url,
            )
        )
    return found


# -- settling ---------------------------------------------------------------------------------

ONLY_UNCERTAIN = ""
"""The key of a bare `--task-id ID`: the run's one uncertain submission."""


def is_under(node_path: str, prefix: str) -> bool:
    """Whether `node_path` is the node `prefix` or one of its loop's items (`each[3].video`
    is under `each`, `eachother` is not)."""
    return node_path == prefix or node_path.startswith(prefix + "[")


def uncertain_under(runlog: RunLog, run_id: str, epoch: int, node_path: str) -> list[Intent]:
    """The node's (or its loop items') submissions whose outcome nobody knows yet: marked
    uncertain, or sent with no answer recorded (a webhook may still name their task)."""
    return [
        intent
        for intent in runlog.intents(run_id, epoch=epoch)
        if is_under(intent.node_path, node_path)
        and not intent.task_id
        and intent.state in (IntentState.SENT, IntentState.UNCERTAIN)
    ]


def marked_uncertain_under(runlog: RunLog, run_id: str, epoch: int, node_path: str) -> list[Intent]:
    """The node's (or its loop items') submissions marked uncertain: those a user's task ids
    settle, or a resubmit abandons."""
    return [
        intent
        for intent in runlog.intents(run_id, epoch=epoch)
        if intent.state == IntentState.UNCERTAIN and is_under(intent.node_path, node_path)
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
    """Why `task_id` cannot be `intent`'s task (taken, unknown at PiAPI, another request)."""
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
