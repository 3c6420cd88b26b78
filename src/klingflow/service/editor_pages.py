"""The editor's pages: a new workflow or the latest version of one, checked as it is typed
(`editor.check_draft`), and published as a new version."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from klingflow.errors import WorkflowDefinitionError
from klingflow.service.deps import EngineDep, RegistryDep
from klingflow.service.editor import (
    SNIPPETS,
    STARTER,
    DraftCheck,
    check_draft,
    restore_secrets,
    sample_inputs,
    stray_mask_problems,
)
from klingflow.service.operations import latest_published
from klingflow.service.pages import Pages, PagesDep, flash, see_other
from klingflow.service.sessions import read_form
from klingflow.workflows.engine import Engine
from klingflow.workflows.registry import PublishOutcome, WorkflowRegistry

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


def _editor_page(
    request: Request,
    pages: Pages,
    *,
    source: str,
    sample: str,
    check: DraftCheck,
    editing: str | None,
    status_code: int = 200,
) -> HTMLResponse:
    return pages.render(
        request, "editor.html", status_code=status_code, source=source, sample=sample,
        check=check, editing=editing, snippets=SNIPPETS,
    )  # fmt: skip


@router.get("/editor")
def editor_page(
    request: Request,
    pages: PagesDep,
    registry: RegistryDep,
    engine: EngineDep,
    workflow: str | None = None,
) -> HTMLResponse:
    """A new workflow, or (`?workflow=NAME`) the latest version of one, in the editor."""
    source = STARTER if workflow is None else latest_published(registry, workflow).source
    check = check_draft(source, "", prices=engine.client.prices)
    sample = "" if check.workflow is None else json.dumps(sample_inputs(check.workflow))
    return _editor_page(request, pages, source=source, sample=sample, check=check, editing=workflow)


async def _draft(
    request: Request, engine: Engine, registry: WorkflowRegistry, pages: Pages
) -> tuple[str, str, DraftCheck, FormData]:
    """The posted draft, checked; editing a published workflow, the secrets the page showed
    as `***` are put back (`restore_secrets`), and a `***` left on a changed line refused."""
    form = await read_form(request)
    source, sample = form.get("source"), form.get("sample")
    text = source.replace("\r\n", "\n") if isinstance(source, str) else ""
    sample_text = sample if isinstance(sample, str) else ""
    editing = form.get("editing")
    published = registry.latest(editing) if isinstance(editing, str) and editing else None
    stray: list[int] = []
    if published is not None:
        text, stray = restore_secrets(text, published.source, pages.secrets)
    if stray:
        return text, sample_text, DraftCheck(stray_mask_problems(stray)), form
    return text, sample_text, check_draft(text, sample_text, prices=engine.client.prices), form


@router.post("/fragments/editor-check")
async def editor_check(
    request: Request, pages: PagesDep, engine: EngineDep, registry: RegistryDep
) -> HTMLResponse:
    """The editor's live check as you type: problems with their lines, graph and price."""
    _, _, check, _ = await _draft(request, engine, registry, pages)
    return pages.render(request, "_editor_results.html", live=True, check=check)


@router.post("/editor", response_model=None)
async def editor_post(
    request: Request, pages: PagesDep, registry: RegistryDep, engine: EngineDep
) -> Response:
    """Check the draft (without JavaScript), or publish it as a new version."""
    text, sample, check, form = await _draft(request, engine, registry, pages)
    raw = form.get("editing")
    editing = raw if isinstance(raw, str) and raw else None
    if form.get("intent") != "publish" or check.problems:
        code = 422 if check.problems and form.get("intent") == "publish" else 200
        return _editor_page(
            request, pages, source=text, sample=sample, check=check, editing=editing,
            status_code=code,
        )  # fmt: skip
    try:
        version, outcome = registry.publish(text)
    except WorkflowDefinitionError as error:  # another check than the draft's (never, today)
        check = DraftCheck(error.problems)
        return _editor_page(
            request, pages, source=text, sample=sample, check=check, editing=editing,
            status_code=422,
        )  # fmt: skip
    if outcome is not PublishOutcome.UNCHANGED:
        request.app.state.scheduler.wake()  # its schedules start now
    number = len(registry.versions(version.name))
    said = {
        PublishOutcome.PUBLISHED: f"published version {number} of {version.name}",
        PublishOutcome.REPUBLISHED: f"an earlier text of {version.name} is the latest again",
        PublishOutcome.UNCHANGED: f"{version.name} is unchanged: nothing was published",
    }
    flash(request, said[outcome] + "; older runs keep the version they started with")
    return see_other(f"/workflows/{version.name}")
