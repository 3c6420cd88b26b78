"""How to settle an uncertain submission: exactly where to look for the task it may have made.

A create request that got no answer may or may not have made a (paid) task. klingflow never
resends it on its own; to settle it, a person finds the task at PiAPI and gives its id
(checked at PiAPI before it is accepted). What they need to find it: the intent id, the
window in which PiAPI would have created the task (from the moment the request left until
the client gave up, a minute either side for clocks), the prompt, and the webhook URL that
carries the intent id, since PiAPI's webhook for that task settles it by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from klingflow.piapi._wire import with_intent_id
from klingflow.workflows.records import IntentState
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.schema import intents

__all__ = ["SKEW_SECONDS", "UncertainSubmission", "uncertain_hint", "uncertain_submissions"]

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
