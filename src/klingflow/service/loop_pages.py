"""A loop's pages: its items as rows (paged and filtered), one item's detail, and steering a
paused loop by item (retry or skip the selected failed items)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from klingflow.errors import KlingflowError
from klingflow.service.api import APIError
from klingflow.service.deps import EngineDep, RunLogDep
from klingflow.service.operations import existing_run
from klingflow.service.pages import PagesDep, flash, see_other
from klingflow.service.sessions import read_form
from klingflow.service.views import loop_items_of, media_of, poll_ms
from klingflow.workflows.loop_items import (
    ITEM_STATUSES,
    ItemPage,
    item_attempts,
    item_page,
    skip_items,
    top_level,
)
from klingflow.workflows.nodes.loop import LoopNode
from klingflow.workflows.records import RunRecord, RunStatus
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.spec import Workflow
from klingflow.workflows.steering import Action, Command

__all__ = ["ITEMS_PER_PAGE", "router"]

router = APIRouter(include_in_schema=False)


ITEMS_PER_PAGE = 50
"""Rows per items page: a batch of thousands is paged, not drawn at once."""


@dataclass(frozen=True)
class _Loop:
    """A started loop of a run: its spec and its items, for the pages to page through."""

    runlog: RunLog
    run: RunRecord
    spec: LoopNode
    items: list[Any]

    def page(self, *, status: str | None = None, offset: int = 0, limit: int) -> ItemPage:
        """The loop's items from `offset` (only those in `status`, when given)."""
        return item_page(
            self.runlog, self.run.run_id, self.run.epoch, self.spec.id, items=self.items,
            body_length=len(self.spec.nodes), label=self.spec.label, inputs=self.run.inputs,
            trigger=self.run.trigger, status=status, offset=offset, limit=limit,
        )  # fmt: skip


def _loop(runlog: RunLog, run: RunRecord, loop_id: str) -> _Loop:
    """The loop's spec and its items, or a 404 when the run has no such loop (yet)."""
    workflow = Workflow.model_validate(run.workflow)
    spec = next((n for n in workflow.nodes if n.id == loop_id), None)
    row = next(
        (n for n in top_level(runlog, run.run_id, run.epoch)[0] if n.node_id == loop_id), None
    )
    if not isinstance(spec, LoopNode) or row is None:
        raise APIError(404, "LoopNotFound", f"run {run.run_id} has no started loop {loop_id!r}")
    return _Loop(runlog, run, spec, loop_items_of(row))


ItemStatus = Literal["failed", "running", "queued", "succeeded", "skipped"]


def _items_context(
    run_id: str,
    loop_id: str,
    runlog: RunLogDep,
    status: ItemStatus | None = None,
    page: Annotated[int, Query(ge=1)] = 1,
) -> dict[str, Any]:
    """What the items page and its live fragment show: one page of rows, filtered."""
    run = existing_run(runlog, run_id)
    loop = _loop(runlog, run, loop_id)
    found = loop.page(status=status, offset=(page - 1) * ITEMS_PER_PAGE, limit=ITEMS_PER_PAGE)
    media = {item.index: [m for n in item.nodes for m in media_of(run, n)] for item in found.items}
    return {
        "run": run,
        "loop": loop.spec,
        "items": found,
        "media": media,
        "page": page,
        "pages": max(1, -(-found.matching // ITEMS_PER_PAGE)),
        "statuses": ITEM_STATUSES,
        "can_steer": run.status is RunStatus.PAUSED and run.paused_node == loop_id,
        "poll_ms": poll_ms(run.status),
    }


ItemsContext = Annotated[dict[str, Any], Depends(_items_context)]
"""The route signature the items page and its live fragment share (path, filter, page)."""


@router.get("/runs/{run_id}/loops/{loop_id}")
def items_page(request: Request, pages: PagesDep, context: ItemsContext) -> HTMLResponse:
    """A loop's items as rows: label, status, attempts, cost, player; filtered and paged."""
    return pages.render(request, "items.html", **context)


@router.get("/runs/{run_id}/loops/{loop_id}/live")
def items_live(request: Request, pages: PagesDep, context: ItemsContext) -> HTMLResponse:
    """The items page's rows alone, which the page fetches again while the loop runs."""
    return pages.render(request, "_items_live.html", live=True, **context)


@router.get("/runs/{run_id}/loops/{loop_id}/items/{index}")
def item_detail(
    run_id: str, loop_id: str, index: int, request: Request, pages: PagesDep, runlog: RunLogDep
) -> HTMLResponse:
    """One item: its value, and each body node with inputs, output, error and attempts."""
    run = existing_run(runlog, run_id)
    loop = _loop(runlog, run, loop_id)
    spec, items = loop.spec, loop.items
    if not 0 <= index < len(items):
        raise APIError(404, "ItemNotFound", f"loop {loop_id!r} has no item {index}")
    [item] = loop.page(offset=index, limit=1).items
    attempts = item_attempts(runlog, run_id, run.epoch, [n.node_path for n in item.nodes])
    return pages.render(
        request,
        "item.html",
        run=run,
        loop=spec,
        item=item,
        value=items[index],
        total=len(items),
        attempts={
            n.node_path: [a for a in attempts if a.node_path == n.node_path] for n in item.nodes
        },
        media=[m for n in item.nodes for m in media_of(run, n)],
    )


@router.post("/runs/{run_id}/loops/{loop_id}/items")
async def items_action(
    run_id: str, loop_id: str, request: Request, engine: EngineDep
) -> RedirectResponse:
    """Steer a paused loop by item: skip the selected failed items and retry the others, or
    retry the selected ones and skip the others."""
    form = await read_form(request)
    runlog = engine.runlog
    run = existing_run(runlog, run_id)
    back = f"/runs/{run_id}/loops/{loop_id}"
    if run.status is not RunStatus.PAUSED or run.paused_node != loop_id:
        flash(request, f"run {run_id} is not paused on {loop_id}: nothing was changed", "error")
        return see_other(back)
    loop = _loop(runlog, run, loop_id)
    failed = [item.index for item in loop.page(status="failed", limit=len(loop.items)).items]
    selected = {int(v) for v in form.getlist("item") if isinstance(v, str) and v.isdigit()}
    chosen = [i for i in failed if i in selected]
    if not chosen:
        flash(request, "select at least one failed item", "error")
        return see_other(back)
    skip = chosen if form.get("action") == "skip" else [i for i in failed if i not in selected]
    retried = len(failed) - len(skip)
    skip_items(runlog, run_id, run.epoch, loop.spec, skip)
    try:
        await engine.command(run_id, Command(action=Action.RETRY))
    except KlingflowError as error:
        flash(request, f"retry refused: {error}", "error")
    else:
        flash(request, f"retrying {retried} item{'s' if retried != 1 else ''}, skipped {len(skip)}")
    return see_other(back)
