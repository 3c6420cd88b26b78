"""PiAPI tasks as the run log knows them, and what runs have spent."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from klingflow.formats import MomentJSON, UsdJSON
from klingflow.service.deps import RunLogDep
from klingflow.service.operations import utc_midnight
from klingflow.workflows.records import IntentState, Submission

__all__ = ["SpendPublic", "TaskPublic", "TasksPage", "router"]

router = APIRouter(tags=["tasks"])


class TaskPublic(BaseModel):
    """One paid submission: the PiAPI task it created (if known) and where it belongs."""

    intent_id: str
    task_id: str | None
    state: IntentState
    run_id: str
    workflow_name: str
    node_path: str
    estimate_usd: UsdJSON
    note: str | None
    created_at: MomentJSON

    @classmethod
    def of(cls, submission: Submission) -> TaskPublic:
        """The public view of a submission: its intent, with its run and workflow."""
        intent = submission.intent
        return cls(
            intent_id=intent.intent_id,
            task_id=intent.task_id,
            state=intent.state,
            run_id=submission.run_id,
            workflow_name=submission.workflow_name,
            node_path=intent.node_path,
            estimate_usd=intent.estimated_usd,
            note=intent.note,
            created_at=intent.created_at,
        )


class TasksPage(BaseModel):
    """The PiAPI tasks the runs submitted, newest first (`GET /api/tasks`)."""

    tasks: list[TaskPublic]


class SpendPublic(BaseModel):
    """Spend in USD from the run log: charged, and still reserved by running tasks."""

    spent_today_usd: UsdJSON = Field(validation_alias="today_usd")
    spent_usd: UsdJSON = Field(validation_alias="total_usd")
    reserved_usd: UsdJSON
    runs_today: int
    runs_total: int
    since: MomentJSON
    """Start of 'today' (UTC midnight)."""


@router.get("/tasks")
def list_tasks(
    runlog: RunLogDep,
    run_id: str | None = None,
    active: Annotated[
        bool, Query(description="Only submissions that are not settled yet.")
    ] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> TasksPage:
    """Paid submissions, newest first: all, one run's, or only the active ones."""
    found = runlog.submissions(run_id=run_id, active_only=active, limit=limit)
    return TasksPage(tasks=[TaskPublic.of(submission) for submission in found])


@router.get("/spend")
def spend(runlog: RunLogDep) -> SpendPublic:
    """What runs have spent today (UTC, by run start) and in total."""
    summary = runlog.spend(utc_midnight(time.time()))
    return SpendPublic.model_validate(summary, from_attributes=True)
