"""Runs: list, inspect, start a published workflow, and steer paused runs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Response
from pydantic import BaseModel

from klingflow.errors import RunNotFoundError
from klingflow.formats import UsdJSON
from klingflow.service.api import ErrorPublic
from klingflow.service.deps import EngineDep, RegistryDep, RunLogDep
from klingflow.service.operations import (
    existing_run,
    latest_published,
    retry_paused_runs,
    start_published,
)
from klingflow.workflows.engine import Engine
from klingflow.workflows.estimate import estimate_run
from klingflow.workflows.records import RunRecord, RunStatus
from klingflow.workflows.registry import WorkflowRegistry
from klingflow.workflows.run_detail import (
    ITEMS_PER_PAGE,
    MAX_ITEMS_PER_PAGE,
    ItemStatus,
    RunDetailPublic,
    RunPublic,
    run_detail,
)
from klingflow.workflows.steering import Action, Command

__all__ = [
    "RetryRequest",
    "RunDetailPublic",
    "RunPublic",
    "RunsPage",
    "router",
    "start_latest_run",
]

router = APIRouter(tags=["runs"])

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=255, description="One run per key, ever."),
]
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorPublic, "description": "No such run or workflow."},
    409: {"model": ErrorPublic, "description": "The run is not in a state that allows this."},
    422: {"model": ErrorPublic, "description": "Invalid inputs or request."},
}


class RunsPage(BaseModel):
    """A page of runs, newest first (`GET /api/runs`)."""

    runs: list[RunPublic]


class RetryRequest(BaseModel):
    """How to retry a paused run."""

    from_start: bool = False
    """Run every node again in a new epoch (pays again)."""
    resubmit: bool = False
    """Give up on an uncertain submission and submit again (may pay twice)."""
    task_id: str | None = None
    """The task the one uncertain submission created (confirmed at PiAPI first)."""
    task_ids: dict[str, str] | None = None
    """The task each uncertain submission created, by node path (`each[3].video`); each is
    confirmed at PiAPI and matched to its submission before any is taken."""


class NodeEstimatePublic(BaseModel):
    """One paid submission a run would make; `estimate_usd` is null when an earlier node
    decides it."""

    node_path: str
    node_type: str
    estimate_usd: UsdJSON | None
    note: str | None


class EstimatePublic(BaseModel):
    """What a run would cost (`klingflow run --dry-run`); nothing was started or sent."""

    estimate_usd: UsdJSON
    unknown: int
    budget_usd: UsdJSON | None
    over_budget: bool
    nodes: list[NodeEstimatePublic]


class BulkRetryPublic(BaseModel):
    """The runs a bulk retry resumed, and the ones it could not, with why."""

    retried: list[str]
    refused: dict[str, str]


@router.get("/runs", responses=ERRORS)
def list_runs(
    runlog: RunLogDep,
    status: RunStatus | None = None,
    workflow: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> RunsPage:
    """Runs, newest first."""
    records = runlog.list_runs(status=status, workflow_name=workflow, limit=limit)
    return RunsPage(runs=[RunPublic.of(run) for run in records])


async def start_latest_run(
    registry: WorkflowRegistry,
    engine: Engine,
    response: Response,
    name: str,
    payload: dict[str, Any],
    *,
    idempotency_key: str | None,
) -> tuple[RunRecord, bool]:
    """Start a run of `name`'s latest version with `payload` as its trigger: (run, created).

    The one start-a-run endpoint path, behind `POST /workflows/{name}/runs` and the trigger
    hook `POST /hooks/{workflow}`, so both answer alike: 201 for a new run, 200 (set on
    `response`) with the Idempotency-Key's earlier run, 404 for a workflow never published.
    """
    published = latest_published(registry, name)
    run, created = await start_published(
        engine, published, payload, idempotency_key=idempotency_key
    )
    if not created:
        response.status_code = 200
    return run, created


@router.post("/workflows/{name}/runs", status_code=201, responses=ERRORS)
async def start_run(
    name: str,
    registry: RegistryDep,
    engine: EngineDep,
    response: Response,
    payload: Annotated[dict[str, Any], Body()],
    idempotency_key: IdempotencyKey = None,
) -> RunPublic:
    """Start a run of the latest version with `payload` as trigger (200: the key's run)."""
    run, _ = await start_latest_run(
        registry, engine, response, name, payload, idempotency_key=idempotency_key
    )
    return RunPublic.of(run)


@router.post("/workflows/{name}/estimate", responses=ERRORS)
def estimate(
    name: str,
    registry: RegistryDep,
    engine: EngineDep,
    payload: Annotated[dict[str, Any], Body()],
) -> EstimatePublic:
    """What a run of the latest version with `payload` would cost; starts and sends nothing."""
    workflow = latest_published(registry, name).load()
    found = estimate_run(workflow, payload, prices=engine.client.prices)
    return EstimatePublic.model_validate(found.public_dict())


@router.get("/runs/{run_id}", responses=ERRORS)
def get_run(
    run_id: str,
    runlog: RunLogDep,
    status: Annotated[
        ItemStatus | None, Query(description="Only loop items in this status.")
    ] = None,
    offset: Annotated[int, Query(ge=0, description="The first loop item shown.")] = 0,
    limit: Annotated[
        int, Query(ge=1, le=MAX_ITEMS_PER_PAGE, description="Loop items per page.")
    ] = ITEMS_PER_PAGE,
) -> RunDetailPublic:
    """A run with its top-level nodes and, for each loop, its items counted by status and one
    page of them (`offset`, `limit`, `status`; `next_offset` says where the next page
    starts), with the attempts and PiAPI submissions of the nodes shown."""
    detail = run_detail(runlog, run_id, status=status, offset=offset, limit=limit)
    if detail is None:
        raise RunNotFoundError(run_id)
    return detail


@router.post("/runs/{run_id}/retry", responses=ERRORS)
async def retry_run(
    run_id: str,
    engine: EngineDep,
    body: Annotated[RetryRequest | None, Body()] = None,
) -> RunPublic:
    """Retry a paused run where it stopped (or from the start)."""
    existing_run(engine.runlog, run_id)
    body = body or RetryRequest()
    action = Action.RESTART if body.from_start else Action.RETRY
    command = Command(
        action=action, resubmit=body.resubmit, task_id=body.task_id, task_ids=body.task_ids
    )
    return RunPublic.of(await engine.command(run_id, command))


@router.post("/runs/{run_id}/skip", responses=ERRORS)
async def skip_node(run_id: str, engine: EngineDep) -> RunPublic:
    """Skip the node a run paused on and carry on."""
    existing_run(engine.runlog, run_id)
    return RunPublic.of(await engine.command(run_id, Command(action=Action.SKIP)))


@router.post("/runs/{run_id}/cancel", responses=ERRORS)
async def cancel_run(run_id: str, engine: EngineDep) -> RunPublic:
    """Cancel a queued, running or paused run."""
    existing_run(engine.runlog, run_id)
    return RunPublic.of(await engine.command(run_id, Command(action=Action.CANCEL)))


@router.post("/workflows/{name}/retry-paused", responses=ERRORS)
async def retry_paused(
    name: str, engine: EngineDep, limit: Annotated[int, Query(ge=1, le=1000)] = 1000
) -> BulkRetryPublic:
    """Retry every paused run of a workflow; refusals are listed, not raised."""
    retried, refused = await retry_paused_runs(engine, name, limit=limit)
    return BulkRetryPublic(retried=retried, refused=refused)
