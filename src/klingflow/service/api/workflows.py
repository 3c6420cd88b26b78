"""Published workflows: publish a version (YAML or JSON text), list them, read one."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from klingflow.errors import InvalidRequestError, WorkflowDefinitionError, WorkflowNotFoundError
from klingflow.formats import MomentJSON
from klingflow.redaction import MASK, redact_values
from klingflow.service.api import APIError, ErrorPublic
from klingflow.service.deps import RegistryDep, RunLogDep
from klingflow.service.editor import restore_secrets, stray_mask_problems
from klingflow.workflows.registry import PublishedWorkflow, PublishOutcome, WorkflowRegistry

__all__ = ["WorkflowDetailPublic", "WorkflowVersionPublic", "WorkflowsPage", "router"]

router = APIRouter(tags=["workflows"])

MAX_SOURCE_BYTES = 1024 * 1024
_TEXT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The workflow file: YAML or JSON text.",
        "content": {
            kind: {"schema": {"type": "string"}}
            for kind in ("application/yaml", "text/plain", "application/json")
        },
    }
}


class WorkflowVersionPublic(BaseModel):
    """One published version; `source` is the text as published, known secrets masked."""

    name: str
    hash: str
    created_at: MomentJSON
    source: str

    @classmethod
    def of(cls, version: PublishedWorkflow, secrets: tuple[str, ...] = ()) -> WorkflowVersionPublic:
        """The public view of `version`; values of `secrets` in its text masked."""
        return cls(
            name=version.name,
            hash=version.hash,
            created_at=version.created_at,
            source=redact_values(version.source, secrets),
        )


class WorkflowSummaryPublic(BaseModel):
    """A published workflow at a glance: its latest version and how many there are."""

    name: str
    latest_hash: str
    latest_created_at: MomentJSON
    version_count: int


class WorkflowsPage(BaseModel):
    """Every published workflow (`GET /api/workflows`)."""

    workflows: list[WorkflowSummaryPublic]


class WorkflowSummaryVersion(BaseModel):
    """One version of a workflow, without its text (which can be long)."""

    hash: str
    created_at: MomentJSON


class WorkflowDetailPublic(BaseModel):
    """The latest version, and every version (newest first, without their text)."""

    name: str
    latest: WorkflowVersionPublic
    versions: list[WorkflowSummaryVersion]


@router.post(
    "/workflows",
    status_code=201,
    openapi_extra=_TEXT_BODY,
    responses={422: {"model": ErrorPublic, "description": "The workflow is invalid."}},
)
async def publish_workflow(
    request: Request, registry: RegistryDep, runlog: RunLogDep, response: Response
) -> WorkflowVersionPublic:
    """Validate and publish a workflow (201); an older version's text makes that version the
    latest again (200), and the latest's text is a no-op (200)."""
    raw = await request.body()
    if len(raw) > MAX_SOURCE_BYTES:
        raise APIError(413, "PayloadTooLarge", f"a workflow is at most {MAX_SOURCE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequestError([("body", "must be UTF-8 text")]) from None
    if MASK in text:
        text = _restore_masked(text, registry, runlog.secrets)
    # Off the event loop: validating a large file renders its literal templates, which
    # may take up to the template time limit each; the service keeps answering meanwhile.
    version, outcome = await asyncio.to_thread(registry.publish, text)
    if outcome is not PublishOutcome.UNCHANGED:
        request.app.state.scheduler.wake()  # its schedules start now, not at the next look
    if outcome is not PublishOutcome.PUBLISHED:
        response.status_code = 200
    return WorkflowVersionPublic.of(version)


_TOP_LEVEL_NAME = re.compile(r"""^name:[ \t]*['"]?([^'"\s#]+)""", re.MULTILINE)


def _restore_masked(text: str, registry: WorkflowRegistry, secrets: tuple[str, ...]) -> str:
    """A text read from `GET /api/workflows/{name}` shows its secrets as `***`: posted back,
    the lines kept as shown get the published text back (as the web editor does), and a
    changed line still holding `***` is refused, so the mask is never published as a key."""
    match = _TOP_LEVEL_NAME.search(text)
    published = registry.latest(match.group(1)) if match else None
    if published is None:
        return text
    restored, stray = restore_secrets(text, published.source, secrets)
    if stray:
        raise WorkflowDefinitionError(stray_mask_problems(stray))
    return restored


@router.get("/workflows")
def list_workflows(registry: RegistryDep) -> WorkflowsPage:
    """Every published workflow with its latest version."""
    summaries = []
    for name in registry.names():
        versions = registry.versions(name)
        summaries.append(
            WorkflowSummaryPublic(
                name=name,
                latest_hash=versions[0].hash,
                latest_created_at=versions[0].created_at,
                version_count=len(versions),
            )
        )
    return WorkflowsPage(workflows=summaries)


@router.get(
    "/workflows/{name}",
    responses={404: {"model": ErrorPublic, "description": "Never published."}},
)
def get_workflow(name: str, registry: RegistryDep, runlog: RunLogDep) -> WorkflowDetailPublic:
    """A workflow's latest version and its history."""
    versions = registry.versions(name)
    if not versions:
        raise WorkflowNotFoundError(name)
    return WorkflowDetailPublic(
        name=name,
        latest=WorkflowVersionPublic.of(versions[0], runlog.secrets),
        versions=[WorkflowSummaryVersion(hash=v.hash, created_at=v.created_at) for v in versions],
    )
