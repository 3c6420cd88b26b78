"""What the JSON API and the web UI both do, written once so both behave the same."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from klingflow.errors import (
    IdempotencyConflictError,
    InvalidRequestError,
    KlingflowError,
    RunNotFoundError,
    WorkflowNotFoundError,
)
from klingflow.workflows.engine import Engine
from klingflow.workflows.records import RunRecord, RunStatus
from klingflow.workflows.registry import PublishedWorkflow, WorkflowRegistry
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.steering import Action, Command

__all__ = [
    "existing_run",
    "latest_published",
    "retry_paused_runs",
    "start_published",
    "utc_midnight",
]


def utc_midnight(now: float) -> float:
    """The start of `now`'s UTC day, Unix seconds: where 'today' begins for spend."""
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp()


def existing_run(runlog: RunLog, run_id: str) -> RunRecord:
    """The run, or `RunNotFoundError` (404)."""
    run = runlog.get_run(run_id)
    if run is None:
        raise RunNotFoundError(run_id)
    return run


def latest_published(registry: WorkflowRegistry, name: str) -> PublishedWorkflow:
    """The version runs of `name` start from, or `WorkflowNotFoundError` (404)."""
    published = registry.latest(name)
    if published is None:
        raise WorkflowNotFoundError(name)
    return published


RESERVED_KEY_PREFIXES = ("schedule:", "form:")
"""Idempotency keys the server makes itself (schedule ticks, web forms): never a client's."""


async def start_published(
    engine: Engine,
    published: PublishedWorkflow,
    payload: dict[str, Any],
    *,
    idempotency_key: str | None,
    is_server_key: bool = False,
) -> tuple[RunRecord, bool]:
    """Start a run of `published`: (run, created). A known key returns its run, and
    `Engine.start_run` enqueues it if its process died before it could.

    Keys are scoped per workflow (stored as `<workflow>/<key>`), so one workflow's key never
    answers with another workflow's run; a client's key may not use a server prefix
    (`schedule:`, `form:`), and a known key with a different body is a 409, not the old run.
    """
    scoped = None
    if idempotency_key is not None:
        if not is_server_key and idempotency_key.startswith(RESERVED_KEY_PREFIXES):
            raise InvalidRequestError(
                [("Idempotency-Key", "the prefixes schedule: and form: are the server's")]
            )
        scoped = f"{published.name}/{idempotency_key}"
    known = None if scoped is None else engine.runlog.find_by_key(scoped)
    if known is not None and known.trigger != payload:
        raise IdempotencyConflictError(
            f"Idempotency-Key {idempotency_key!r} already started run {known.run_id} with a "
            "different body; use a new key for a new run",
            run_id=known.run_id,
        )
    run = await engine.start_run(published.load(), payload, idempotency_key=scoped)
    return run, known is None


async def retry_paused_runs(
    engine: Engine, name: str, *, limit: int
) -> tuple[list[str], dict[str, str]]:
    """Retry the paused runs of `name` where they stopped: (retried, refused with why)."""
    retried: list[str] = []
    refused: dict[str, str] = {}
    for run in engine.runlog.list_runs(status=RunStatus.PAUSED, workflow_name=name, limit=limit):
        try:
            await engine.command(run.run_id, Command(action=Action.RETRY))
        except KlingflowError as error:
            refused[run.run_id] = str(error)
        else:
            retried.append(run.run_id)
    return retried, refused
