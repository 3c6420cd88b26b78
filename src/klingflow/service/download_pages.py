"""A run as downloads: every file it made in a streamed zip, and its manifest (CSV, JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import Response, StreamingResponse

from klingflow.service.deps import RunLogDep
from klingflow.service.exports import (
    ManifestRow,
    manifest,
    manifest_csv,
    manifest_json,
    run_files,
    stream_zip,
)
from klingflow.service.operations import existing_run
from klingflow.service.views import loop_items_of
from klingflow.workflows.nodes.loop import LoopNode
from klingflow.workflows.records import NodeRun, RunRecord
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.spec import Workflow

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


def _export(runlog: RunLog, run_id: str) -> tuple[RunRecord, list[NodeRun], list[ManifestRow]]:
    run = existing_run(runlog, run_id)
    nodes = runlog.nodes(run_id, epoch=run.epoch)
    items = {n.node_id: loop_items_of(n) for n in nodes if n.node_type == "loop"}
    spec = Workflow.model_validate(run.workflow)
    labels = {n.id: n.label for n in spec.nodes if isinstance(n, LoopNode)}
    return run, nodes, manifest(run, nodes, items, labels)


def _attachment(name: str) -> dict[str, str]:
    return {
        "Content-Disposition": f'attachment; filename="{name}"',
        "X-Content-Type-Options": "nosniff",
    }


@router.get("/runs/{run_id}/download.zip")
def run_zip(run_id: str, runlog: RunLogDep) -> StreamingResponse:
    """Every file the run's nodes made, with the manifest (CSV and JSON), as a streamed zip."""
    run, nodes, rows = _export(runlog, run_id)
    files: dict[str, Path] = {}
    for node in sorted(nodes, key=lambda n: (n.item_index is not None, n.item_index or 0)):
        files.update(run_files(run, node))  # a file two nodes name goes in once
    extra = [("manifest.csv", manifest_csv(rows)), ("manifest.json", manifest_json(rows))]
    return StreamingResponse(
        stream_zip(list(files.items()), extra),
        media_type="application/zip",
        headers=_attachment(f"{run_id}.zip"),
    )


@router.get("/runs/{run_id}/manifest.{kind}")
def run_manifest(run_id: str, kind: Literal["csv", "json"], runlog: RunLogDep) -> Response:
    """Row -> task id, file, cost, status: for a spreadsheet (CSV) or a program (JSON)."""
    _, _, rows = _export(runlog, run_id)
    if kind == "csv":
        body, media_type = manifest_csv(rows), "text/csv; charset=utf-8"
    else:
        body, media_type = manifest_json(rows), "application/json"
    return Response(body, media_type=media_type, headers=_attachment(f"{run_id}-manifest.{kind}"))
