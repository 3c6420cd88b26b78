"""PiAPI tasks as the run log knows them, and what runs have spent."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from klingflow.service.deps import RunLogDep
from klingflow.workflows.runlog import IntentState

__all__ = ["SpendPublic", "TaskPublic", "TasksPage", "router"]

router = APIRouter(tags=["tasks"])

SPEND_SCAN_LIMIT = 100_000
"""Runs summed by /api/spend (newest first)."""


class TaskPublic(BaseModel):
    """One paid submission: the PiAPI task it created (if known) and where it belongs."""

    intent_id: str
    task_id: str | None
    state: IntentState
    run_id: str
    workflow_name: str
    node_path: str
    estimated_cost_usd: Decimal
    note: str | None


class TasksPage(BaseModel):
    tasks: list[TaskPublic]


class SpendPublic(BaseModel):
    """Spend in USD from the run log: charged, and still reserved by running tasks."""

    today_usd: Decimal
    total_usd: Decimal
    reserved_usd: Decimal
    runs_today: int
    runs_total: int
    since: float
    """Start of 'today' (UTC midnight), Unix seconds."""


@router.get("/tasks")
async def list_tasks(
    runlog: RunLogDep,
    run_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most recent runs looked at")] = 50,
) -> TasksPage:
    """Submissions of the most recent runs (or of one run), newest run first."""
    if run_id is not None:
        run = runlog.get_run(run_id)
        runs = [] if run is None else [run]
    else:
        runs = runlog.list_runs(limit=limit)
    tasks = [
        TaskPublic(
            intent_id=intent.intent_id,
            task_id=intent.task_id,
            state=intent.state,
            run_id=run.run_id,
            workflow_name=run.workflow_name,
            node_path=intent.node_path,
            estimated_cost_usd=intent.estimated_usd,
            note=intent.note,
        )
        for run in runs
        for intent in runlog.intents(run.run_id)
    ]
    return TasksPage(tasks=tasks)


@router.get("/spend")
async def spend(runlog: RunLogDep) -> SpendPublic:
    """What runs have spent today (UTC, by run start) and in total."""
    now = datetime.fromtimestamp(time.time(), UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    runs = runlog.list_runs(limit=SPEND_SCAN_LIMIT)
    today = [run for run in runs if run.created_at >= midnight]
    return SpendPublic(
        today_usd=sum((run.spent_usd for run in today), Decimal(0)),
        total_usd=sum((run.spent_usd for run in runs), Decimal(0)),
        reserved_usd=sum((run.reserved_usd for run in runs), Decimal(0)),
        runs_today=len(today),
        runs_total=len(runs),
        since=midnight,
    )
