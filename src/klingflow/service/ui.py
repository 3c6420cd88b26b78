"""The web UI: server-rendered pages (Jinja2) over the same engine and run log as the API.

Pages work without JavaScript; `static/app.js` only refreshes live regions (a run page
while it runs, the dashboard) and asks before actions that cancel or may pay. Every form
posts with the session's CSRF token and answers with a redirect, so a reload never posts
twice; the start form also carries an idempotency key, so a double click starts one run.
Pages that only read are plain functions: FastAPI runs them in its thread pool, off the
event loop the engine shares.
"""

from __future__ import annotations

import mimetypes
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    RedirectResponse,
    Response,
)

from klingflow.errors import InvalidRequestError, KlingflowError, WorkflowDefinitionError
from klingflow.piapi.pricing import PriceTable
from klingflow.service import download_pages, editor_pages, loop_pages
from klingflow.service.api import APIError
from klingflow.service.attempts import failed_attempts
from klingflow.service.deps import EngineDep, RegistryDep, RunLogDep
from klingflow.service.forms import Upload, fields_for, parse_form, read_uploads, typed_values
from klingflow.service.operations import (
    existing_run,
    latest_published,
    retry_paused_runs,
    start_published,
    utc_midnight,
)
from klingflow.service.pages import PagesDep
from klingflow.service.pages import flash as _flash
from klingflow.service.pages import see_other as _redirect
from klingflow.service.sessions import is_signed_in, read_form, require_login, sign_in, sign_out
from klingflow.service.views import (
    MAX_MEDIA_SHOWN,
    MAX_SUBMISSIONS_SHOWN,
    estimate_breakdown,
    graph_of,
    loop_items_of,
    poll_ms,
    progress_of,
    run_graph,
    run_view,
    schedules_of,
    workflow_graph,
)
from klingflow.workflows.engine import Engine
from klingflow.workflows.estimate import RunEstimate, estimate_run
from klingflow.workflows.failed_tasks import failed_task_intents
from klingflow.workflows.loop_items import (
    finished_item_nodes,
    item_counts,
    top_level,
)
from klingflow.workflows.loop_output import shown_top_level
from klingflow.workflows.nodes.loop import LoopNode
from klingflow.workflows.records import NodeRun, RunRecord, RunStatus
from klingflow.workflows.registry import PublishedWorkflow, WorkflowRegistry
from klingflow.workflows.run_detail import MAX_VALUE_BYTES
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.spec import Workflow
from klingflow.workflows.steering import Action, Command
from klingflow.workflows.uncertain import uncertain_submissions

__all__ = ["STATIC_DIR", "pages_router", "public_router"]

STATIC_DIR = Path(__file__).parent / "static"
pages_router = APIRouter(include_in_schema=False, dependencies=[Depends(require_login)])
"""Every page and fragment; a login is asked for first when a token is configured."""
public_router = APIRouter(include_in_schema=False)
"""The login page and sign-out."""

DASHBOARD_POLL_MS = 3000
INLINE_MEDIA = ("video/", "image/")
"""Run files shown in the page; anything else (an HTML file a download node saved, say) is
only offered as a download, so it can never run script on the UI's origin."""


# --- dashboard -------------------------------------------------------------------------------


def _dashboard(runlog: RunLog) -> dict[str, Any]:
    return {
        "counts": runlog.status_counts(),
        "spend": runlog.spend(utc_midnight(time.time())),
        "active": runlog.submissions(active_only=True, limit=20),
        "recent": runlog.list_runs(limit=10),
        "poll_ms": DASHBOARD_POLL_MS,
    }


@pages_router.get("/")
def dashboard(request: Request, pages: PagesDep, runlog: RunLogDep) -> HTMLResponse:
    """The dashboard: spend, the PiAPI tasks running now, the latest runs."""
    return pages.render(request, "dashboard.html", **_dashboard(runlog))


@pages_router.get("/fragments/dashboard")
def dashboard_live(request: Request, pages: PagesDep, runlog: RunLogDep) -> HTMLResponse:
    """The dashboard's live part alone, which the page fetches again while it is open."""
    return pages.render(request, "_dashboard_live.html", live=True, **_dashboard(runlog))


# --- workflows -------------------------------------------------------------------------------


@pages_router.get("/workflows")
def workflows_page(
    request: Request, pages: PagesDep, registry: RegistryDep, runlog: RunLogDep
) -> HTMLResponse:
    """The published workflows with their next schedule tick and last run."""
    rows = []
    now = datetime.now(UTC)
    for name in registry.names():
        versions = registry.versions(name)
        last = runlog.list_runs(workflow_name=name, limit=1)
        workflow: Workflow | None = None
        problem: str | None = None
        try:
            workflow = versions[0].load()
        except WorkflowDefinitionError as error:  # stored by an older klingflow, say
            problem = str(error)
        rows.append(
            {
                "name": name,
                "workflow": workflow,
                "problem": problem,
                "schedules": [] if workflow is None else schedules_of(workflow, now),
                "latest": versions[0],
                "version_count": len(versions),
                "last_run": last[0] if last else None,
            }
        )
    return pages.render(request, "workflows.html", rows=rows)


def _workflow_page(
    request: Request,
    pages: PagesDep,
    registry: WorkflowRegistry,
    runlog: RunLog,
    latest: PublishedWorkflow,
    *,
    typed: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    estimate: RunEstimate | str | None = None,
    uploads: dict[str, Upload] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    workflow = latest.load()
    name = workflow.name
    return pages.render(
        request,
        "workflow.html",
        status_code=status_code,
        workflow=workflow,
        latest=latest,
        versions=registry.versions(name),
        graph=graph_of(workflow),
        flow=workflow_graph(workflow),
        schedules=schedules_of(workflow, datetime.now(UTC)),
        fields=fields_for(workflow, typed, errors, uploads),
        form_error=bool(errors),
        estimate=estimate,
        breakdown=estimate_breakdown(estimate) if isinstance(estimate, RunEstimate) else [],
        idempotency_key=f"form:{uuid.uuid4().hex}",
        runs=runlog.list_runs(workflow_name=name, limit=10),
        paused=runlog.status_counts(workflow_name=name)[RunStatus.PAUSED],
    )


@pages_router.get("/workflows/{name}")
def workflow_page(
    name: str, request: Request, pages: PagesDep, registry: RegistryDep, runlog: RunLogDep
) -> HTMLResponse:
    """A workflow's latest version: its graph, schedules, runs and start form."""
    return _workflow_page(request, pages, registry, runlog, latest_published(registry, name))


@pages_router.post("/workflows/{name}/runs", response_model=None)
async def start_from_form(
    name: str,
    request: Request,
    pages: PagesDep,
    registry: RegistryDep,
    engine: EngineDep,
) -> Response:
    """Start a run from the form (or, with the Estimate button, only price it); a refused
    form comes back filled in, with reasons."""
    form = await read_form(request)
    published = latest_published(registry, name)
    workflow = published.load()
    uploads, upload_errors = await read_uploads(workflow, form)
    payload, errors = parse_form(workflow, form, uploads)
    errors.update(upload_errors)
    # A file's rows always come back first, previewed and priced: nothing is paid for rows
    # nobody has looked at.
    if errors or uploads or form.get("intent") == "estimate":
        estimate: RunEstimate | str | None = None
        if not errors:
            try:
                estimate = estimate_run(workflow, payload, prices=engine.client.prices)
            except InvalidRequestError as error:  # a node Kling would refuse with these inputs
                estimate = str(error)
        return _workflow_page(
            request, pages, registry, engine.runlog, published,
            typed=typed_values(workflow, form, uploads), errors=errors, estimate=estimate,
            uploads=uploads, status_code=200 if isinstance(estimate, RunEstimate) else 422,
        )  # fmt: skip
    key = form.get("idempotency_key")
    idempotency_key = key if isinstance(key, str) and key.startswith("form:") else None
    try:
        # The version the form was checked against, even if a newer one was just published.
        run, created = await start_published(
            engine, published, payload, idempotency_key=idempotency_key, is_server_key=True
        )
    except KlingflowError as error:
        _flash(request, f"the run was not started: {error}", "error")
        return _redirect(f"/workflows/{name}")
    if created:
        _flash(request, f"started {run.run_id}")
    return _redirect(f"/runs/{run.run_id}")


@pages_router.post("/workflows/{name}/retry-paused")
async def retry_paused_from_page(
    name: str, request: Request, engine: EngineDep
) -> RedirectResponse:
    """The bulk Retry button: every paused run of the workflow goes on where it stopped."""
    await read_form(request)
    retried, refused = await retry_paused_runs(engine, name, limit=1000)
    text = f"retrying {len(retried)} paused run{'s' if len(retried) != 1 else ''}"
    if refused:
        text += f"; {len(refused)} refused, e.g. {next(iter(refused.values()))}"
    _flash(request, text, "error" if refused else "ok")
    return _redirect(f"/workflows/{name}")


# --- runs ------------------------------------------------------------------------------------


@pages_router.get("/runs")
def runs_page(
    request: Request,
    pages: PagesDep,
    runlog: RunLogDep,
    status: RunStatus | None = None,
    workflow: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> HTMLResponse:
    """The newest runs, filtered by status and workflow."""
    runs = runlog.list_runs(status=status, workflow_name=workflow, limit=limit)
    return pages.render(
        request,
        "runs.html",
        runs=runs,
        status=status,
        workflow=workflow,
        counts=runlog.status_counts(workflow_name=workflow),
    )


def _loops(runlog: RunLog, run: RunRecord, nodes: list[NodeRun]) -> dict[str, dict[str, int]]:
    """Item counts by status for each loop the run has reached, by loop id."""
    workflow = Workflow.model_validate(run.workflow)
    counts: dict[str, dict[str, int]] = {}
    for node in nodes:
        spec = workflow.node(node.node_id) if node.node_type == "loop" else None
        if isinstance(spec, LoopNode):
            counts[node.node_path] = item_counts(
                runlog, run.run_id, run.epoch, node.node_path,
                total=len(loop_items_of(node)), body_length=len(spec.nodes),
            )  # fmt: skip
    return counts


_ESTIMATES: dict[str, Decimal | None] = {}
"""Whole-run estimates by run id: a run's workflow and inputs never change, and a loop of
10,000 items is worth pricing once, not on every refresh."""


def _whole_estimate(run: RunRecord, workflow: Workflow, prices: PriceTable) -> Decimal | None:
    if run.run_id not in _ESTIMATES:
        if len(_ESTIMATES) > 1000:
            _ESTIMATES.clear()
        try:
            _ESTIMATES[run.run_id] = estimate_run(workflow, run.trigger, prices=prices).total_usd
        except KlingflowError:  # inputs a newer klingflow refuses, say: no estimate to show
            _ESTIMATES[run.run_id] = None
    return _ESTIMATES[run.run_id]


def _run_context(engine: Engine, run_id: str) -> dict[str, Any]:
    runlog, prices = engine.runlog, engine.client.prices
    run = existing_run(runlog, run_id)
    workflow = Workflow.model_validate(run.workflow)
    resubmits = []
    if run.status is RunStatus.PAUSED and run.paused_node:
        resubmits = failed_task_intents(runlog, run_id, run.epoch, run.paused_node)
    nodes, attempts = top_level(runlog, run_id, run.epoch)  # items: counted, not loaded
    # A loop's output (a reference to its items) as its list while small, else None.
    nodes, attempts = shown_top_level(runlog, nodes, attempts, max_bytes=MAX_VALUE_BYTES)
    counts = _loops(runlog, run, nodes)
    view = run_view(
        run,
        nodes,
        attempts,
        # A batch may have 10,000: the page lists the first ones (one more says "more").
        runlog.intents(run_id, epoch=run.epoch, limit=MAX_SUBMISSIONS_SHOWN + 1),
        resubmits=resubmits,
        item_counts=counts,
        item_nodes=finished_item_nodes(runlog, run_id, run.epoch, limit=MAX_MEDIA_SHOWN),
        items_succeeded=sum(c.get("succeeded", 0) for c in counts.values()),
    )
    progress = progress_of(
        view,
        node_count=len(workflow.nodes),
        estimate_usd=_whole_estimate(run, workflow, prices),
        now=time.time(),
    )
    uncertain = []
    if run.status is RunStatus.PAUSED:  # where to look for the task each may have made
        hook = engine.services().webhook
        uncertain = uncertain_submissions(
            runlog, run_id, run.epoch,
            timeout_seconds=engine.client.timeout_seconds,
            webhook_endpoint=None if hook is None else hook.endpoint,
        )  # fmt: skip
    return {
        "view": view,
        "run": run,
        "flow": run_graph(view, workflow),
        "progress": progress,
        "uncertain": uncertain,
        "poll_ms": poll_ms(run.status),
    }


@pages_router.get("/runs/{run_id}")
def run_page(run_id: str, request: Request, pages: PagesDep, engine: EngineDep) -> HTMLResponse:
    """A run: its nodes on a timeline, attempts, submissions, media, and its controls."""
    return pages.render(request, "run.html", **_run_context(engine, run_id))


@pages_router.get("/runs/{run_id}/live")
def run_live(run_id: str, request: Request, pages: PagesDep, engine: EngineDep) -> HTMLResponse:
    """The run page's live part alone, which the page fetches again while the run goes on."""
    return pages.render(request, "_run_live.html", live=True, **_run_context(engine, run_id))


@pages_router.post("/runs/{run_id}/{action}")
async def run_action(
    run_id: str,
    action: Literal["retry", "restart", "skip", "cancel"],
    request: Request,
    engine: EngineDep,
) -> RedirectResponse:
    """Retry (optionally with a task id, or resubmitting), retry from the start (`restart`),
    skip or cancel; then back."""
    form = await read_form(request)
    run = existing_run(engine.runlog, run_id)
    resubmits = []
    if action == "retry" and run.status is RunStatus.PAUSED and run.paused_node:
        resubmits = failed_task_intents(engine.runlog, run_id, run.epoch, run.paused_node)
    raw = form.get("task_id")
    task_id = raw.strip() if isinstance(raw, str) else ""
    task_ids = {  # one field per uncertain item in the submissions table
        key.removeprefix("task_id:"): value.strip()
        for key, value in form.items()
        if key.startswith("task_id:") and isinstance(value, str) and value.strip()
    }
    command = Command(
        action=Action(action),
        resubmit=form.get("resubmit") == "on",
        task_id=task_id or None,
        task_ids=task_ids or None,
    )
    try:
        await engine.command(run_id, command)
    except KlingflowError as error:
        _flash(request, f"{action} refused: {error}", "error")
    else:
        done = {
            "retry": "retrying",
            "restart": "retrying from the start",
            "skip": "skipped the paused node",
            "cancel": "cancelled",
        }
        text = done[action]
        if resubmits:
            total = sum(i.estimated_usd for i in resubmits)
            count = len(resubmits)
            text += f": {count} new PiAPI task{'s' if count != 1 else ''} (est. ${total:,.2f})"
        _flash(request, text)
    return _redirect(f"/runs/{run_id}")


@pages_router.api_route("/runs/{run_id}/files/{name:path}", methods=["GET", "HEAD"])
def run_file(run_id: str, name: str, runlog: RunLogDep) -> FileResponse:
    """A file from the run's folder (videos stream with range requests); nothing outside."""
    run = existing_run(runlog, run_id)
    root = Path(run.output_dir).resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise APIError(404, "FileNotFound", f"run {run_id} has no file {name!r}")
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    inline = media_type.startswith(INLINE_MEDIA) and media_type != "image/svg+xml"
    return FileResponse(
        path,
        media_type=media_type if inline else "application/octet-stream",
        filename=None if inline else path.name,
        content_disposition_type="inline" if inline else "attachment",
        headers={"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"},
    )


# --- login -----------------------------------------------------------------------------------


def _safe_next(value: Any) -> str:
    """Only paths on this site: a login link must not send anyone elsewhere."""
    if (
        isinstance(value, str)
        and value.startswith("/")
        and not value.startswith("//")  # `//evil`, `////evil`: another site to a browser
        and value.isprintable()
        and "\\" not in value
        and not urlsplit(value).netloc
    ):
        return value
    return "/"


@public_router.get("/login", response_model=None)
def login_page(request: Request, pages: PagesDep, next: str = "/") -> Response:
    """The sign-in form (straight on to `next` when no token is needed or already signed in)."""
    if request.app.state.settings.api_token is None or is_signed_in(request):
        return _redirect(_safe_next(next))
    return pages.render(request, "login.html", next=_safe_next(next), failed=False)


@public_router.post("/login", response_model=None)
async def login(request: Request, pages: PagesDep) -> Response:
    """Sign in with the API token; too many failures from one client get a 429."""
    form = await read_form(request)
    token = form.get("token")
    target = _safe_next(form.get("next"))
    counter, client = failed_attempts(request)
    counter.check(client)  # 429 after too many failures from this client
    if isinstance(token, str) and sign_in(request, token):
        counter.succeeded(client)
        return _redirect(target)
    counter.failed(client)
    return pages.render(request, "login.html", status_code=401, next=target, failed=True)


@public_router.post("/logout")
async def logout(request: Request) -> RedirectResponse:
    """Sign out: this session is revoked, even in copies of its cookie."""
    await read_form(request)
    sign_out(request)
    return _redirect("/login")


# The UI's other pages, each in a module of its own, behind the same login.
pages_router.include_router(editor_pages.router)
pages_router.include_router(loop_pages.router)
pages_router.include_router(download_pages.router)
