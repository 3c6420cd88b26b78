"""Which submission a PiAPI webhook may settle: only the one its task was submitted for.

klingflow gives each submission the webhook endpoint `<public url>/hooks/piapi?intent_id=X`.
When the answer to a create is lost, the delivery's `?intent_id=` binds the task it names
to that uncertain submission. The secret alone cannot prove that: anyone holding it could
post another task's delivery under a victim's `intent_id`, and the run would take someone
else's video. So the binding counts only when the task, as PiAPI reports it on a GET, was
submitted with exactly that endpoint's `intent_id`.
"""

from __future__ import annotations

import urllib.parse

from klingflow.piapi import Task
from klingflow.service.api import APIError

__all__ = ["checked_intent", "intent_matches"]


def _endpoint_intent(task: Task) -> str | None:
    config = task.config or {}
    hook = config.get("webhook_config") if isinstance(config, dict) else None
    endpoint = hook.get("endpoint") if isinstance(hook, dict) else None
    if not isinstance(endpoint, str) or not endpoint:
        return None
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(endpoint).query).get("intent_id")
    return values[0] if values else None


def intent_matches(task: Task, intent_id: str) -> bool:
    """Whether `task` was submitted with the webhook endpoint of `intent_id`."""
    return _endpoint_intent(task) == intent_id


def checked_intent(task: Task, intent_id: str | None) -> str | None:
    """`intent_id` when `task` was submitted for it; 400 otherwise. The receiver asks this of
    the delivery's body before answering, and `intent_matches` of PiAPI's copy after."""
    if intent_id is None:
        return None
    if not intent_matches(task, intent_id):
        raise APIError(
            400,
            "IntentMismatch",
            f"task {task.task_id} was not submitted for intent {intent_id}: the delivery "
            "cannot settle it",
        )
    return intent_id
