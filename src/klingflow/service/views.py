"""What the web UI's pages show, computed from specs and the run log (no HTML here).

Each view is a small frozen dataclass the templates read, so a page never queries the
database itself and the same view serves the full page and its live-update fragment.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import quote

from klingflow.piapi.urls import url_problem
from klingflow.service.exports import node_files
from klingflow.service.graph import GraphLayout, layout
from klingflow.workflows.estimate import RunEstimate
from klingflow.workflows.nodes import NodeSpec
from klingflow.workflows.nodes.loop import LoopNode
from klingflow.workflows.records import (
    TERMINAL_RUN_STATUSES,
    Attempt,
    Intent,
    NodeRun,
    NodeStatus,
    RunRecord,
    RunStatus,
)
from klingflow.workflows.spec import Workflow

__all__ = [
    "EstimateLine",
    "GraphNode",
    "Media",
    "NodeView",
    "Progress",
    "RunView",
    "ScheduleView",
    "estimate_breakdown",
    "graph_of",
    "loop_items_of",
    "media_of",
    "poll_ms",
    "progress_of",
    "run_graph",
    "run_view",
    "schedules_of",
    "workflow_graph",
]

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".webm", ".m4v"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})
MAX_SUBMISSIONS_SHOWN = 100
"""Submissions listed on a run page; each item's task is also on its row and in the manifest."""
MAX_MEDIA_SHOWN = 24
"""Players on a run page; a batch's other videos stay in its run folder."""

_NODE_REFERENCE = re.compile(r"\bnodes\.([A-Za-z_][\w-]*)")


# --- the workflow graph --------------------------------------------------------------------


@dataclass(frozen=True)
class GraphNode:
    """One box of the node graph: what it does, and which earlier nodes it reads."""

    id: str
    type: str
    params: list[tuple[str, str]]
    uses: list[str]
    loop_items: str | None = None
    body: list[GraphNode] = field(default_factory=list)


def _text(value: Any) -> str:
    # Never cut here: a secret cut short would escape the pages' scrubbing (CSS clamps it).
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _graph_node(node: NodeSpec) -> GraphNode:
    raw = dict(node.with_)
    uses = sorted(set(_NODE_REFERENCE.findall(json.dumps(raw))) - {node.id})
    loop_items = None
    body: list[GraphNode] = []
    if isinstance(node, LoopNode):
        loop_items = _text(raw.pop("items", ""))
        body = [_graph_node(inner) for inner in node.nodes]
    params = [(key, _text(value)) for key, value in raw.items()][:6]
    return GraphNode(node.id, node.type, params, uses, loop_items, body)


def graph_of(workflow: Workflow) -> list[GraphNode]:
    """The top-level flow in run order; loops carry their body."""
    return [_graph_node(node) for node in workflow.nodes]


@dataclass(frozen=True)
class ScheduleView:
    """A schedule with when it next starts a run."""

    key: str
    cron: str
    timezone: str
    payload: dict[str, Any]
    next_tick: datetime | None


def schedules_of(workflow: Workflow, now: datetime) -> list[ScheduleView]:
    """The workflow's schedules as the page shows them, each with its next tick after `now`."""
    return [
        ScheduleView(
            key=schedule.key(),
            cron=schedule.cron,
            timezone=schedule.timezone,
            payload=schedule.payload,
            next_tick=schedule.next_tick(after=now),
        )
        for schedule in workflow.schedules
    ]


# --- an estimate --------------------------------------------------------------------------

_ITEM_INDEX = re.compile(r"\[\d+\]")


@dataclass(frozen=True)
class EstimateLine:
    """One paid node of an estimate; a loop's items are one line (`each[*].video`)."""

    node_path: str
    node_type: str
    count: int
    usd: Decimal
    unknown: int
    notes: list[str]


def estimate_breakdown(estimate: RunEstimate) -> list[EstimateLine]:
    """The estimate per node, loop items summed, in run order: what each node will cost."""
    lines: dict[str, EstimateLine] = {}
    for node in estimate.nodes:
        path = _ITEM_INDEX.sub("[*]", node.node_path)
        line = lines.get(path) or EstimateLine(path, node.node_type, 0, Decimal(0), 0, [])
        notes = list(line.notes)
        if node.note and node.note not in notes:
            notes.append(node.note)
        lines[path] = EstimateLine(
            path,
            node.node_type,
            line.count + 1,
            line.usd + (node.usd or Decimal(0)),
            line.unknown + (node.usd is None),
            notes,
        )
    return list(lines.values())


# --- a run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Media:
    """A video or picture a node produced, served from the run folder or PiAPI's URL."""

    node_path: str
    kind: Literal["video", "image"]
    src: str
    name: str


@dataclass(frozen=True)
class NodeView:
    """A node on the timeline, with its attempts (failed ones included) and its media."""

    node: NodeRun
    attempts: list[Attempt]
    media: list[Media]
    item_counts: dict[str, int] = field(default_factory=dict)
    item_total: int = 0
    """A loop's item count (0 for other nodes); `item_counts` by item status."""
    run_message: str | None = None

    @property
    def items_done(self) -> int:
        """A loop's items that need nothing more: succeeded or skipped."""
        return self.item_counts.get("succeeded", 0) + self.item_counts.get("skipped", 0)

    @property
    def is_loop(self) -> bool:
        """A loop node, drawn with its items' progress."""
        return self.node.node_type == "loop"

    @property
    def dom_id(self) -> str:
        """The node's element id on the page (the live refresh matches by it)."""
        return dom_id(self.node.node_path)

    @property
    def seconds(self) -> float | None:
        """The time the node worked: its attempts' durations summed, so a retry adds its
        own time instead of replacing the whole (a pause between them is not counted);
        None while it runs (a retried node's old finish time is no longer its own)."""
        node = self.node
        if node.status is NodeStatus.RUNNING or node.finished_at is None:
            return None
        if self.attempts:
            return sum(a.ended_at - a.started_at for a in self.attempts)
        return None if node.started_at is None else node.finished_at - node.started_at

    @property
    def error_said_above(self) -> bool:
        """The node's error is the run's pause message, already shown at the top."""
        error = self.node.error or {}
        return bool(
            self.node.status is NodeStatus.FAILED and error.get("message") == self.run_message
        )


@dataclass(frozen=True)
class RunView:
    """A run as its page shows it: nodes, submissions, media and what may be done now."""

    run: RunRecord
    nodes: list[NodeView]
    submissions: list[Intent]
    media: list[Media]
    media_total: int
    resubmits: list[Intent] = field(default_factory=list)
    """Failed PiAPI tasks the paused node's Retry submits again, as new (paid) tasks."""

    @property
    def resubmit_usd(self) -> Decimal:
        """What Retry would spend again on failed PiAPI tasks it resubmits."""
        return sum((i.estimated_usd for i in self.resubmits), Decimal(0))

    @property
    def finished(self) -> bool:
        """The run reached a terminal status: no more refreshes, no Cancel."""
        return self.run.status in TERMINAL_RUN_STATUSES

    @property
    def can_retry(self) -> bool:
        """Only a paused run can be retried or skipped."""
        return self.run.status is RunStatus.PAUSED

    @property
    def can_cancel(self) -> bool:
        """Any run not yet finished can be cancelled."""
        return not self.finished

    @property
    def submissions_shown(self) -> list[Intent]:
        """The submissions the page lists (a batch can have thousands)."""
        return self.submissions[:MAX_SUBMISSIONS_SHOWN]

    @property
    def has_more_submissions(self) -> bool:
        """There are submissions beyond those shown."""
        return len(self.submissions) > MAX_SUBMISSIONS_SHOWN


def _media(run: RunRecord, node: NodeRun) -> list[Media]:
    if node.status is not NodeStatus.SUCCEEDED:
        return []
    root = Path(run.output_dir).resolve()
    found: list[Media] = []
    for name in node_files(node.output):
        path = Path(name).resolve()
        suffix = path.suffix.lower()
        kind: Literal["video", "image"] | None = (
            "video" if suffix in VIDEO_SUFFIXES else "image" if suffix in IMAGE_SUFFIXES else None
        )
        if kind is not None and path.is_relative_to(root):
            relative = quote(str(PurePosixPath(*path.relative_to(root).parts)))
            found.append(
                Media(node.node_path, kind, f"/runs/{run.run_id}/files/{relative}", path.name)
            )
    output = node.output
    if not found and isinstance(output, dict) and isinstance(output.get("video_url"), str):
        url = output["video_url"]
        if url_problem(url) is None:  # only a link the browser can open
            found.append(Media(node.node_path, "video", url, url.rsplit("/", 1)[-1]))
    return found


def media_of(run: RunRecord, node: NodeRun) -> list[Media]:
    """The videos and pictures a finished node made (for an item's row, say)."""
    return _media(run, node)


def loop_items_of(node: NodeRun) -> list[Any]:
    """A loop node's items, as its resolved inputs recorded them."""
    inputs = node.inputs if isinstance(node.inputs, dict) else {}
    items = inputs.get("items")
    return items if isinstance(items, list) else []


def run_view(
    run: RunRecord,
    nodes: list[NodeRun],
    attempts: list[Attempt],
    submissions: list[Intent],
    *,
    resubmits: list[Intent] | None = None,
    item_counts: dict[str, dict[str, int]] | None = None,
    item_nodes: list[NodeRun] | None = None,
    items_succeeded: int = 0,
) -> RunView:
    """The run page: top-level nodes in the order they started, each loop with its items
    counted by status (`item_counts` by loop id; the rows are on the loop's items page).
    `item_nodes` are some finished item nodes for the gallery, `items_succeeded` how many
    items succeeded in all (each item's videos are on its row)."""
    by_path: dict[str, list[Attempt]] = {}
    for attempt in attempts:
        by_path.setdefault(attempt.node_path, []).append(attempt)
    top = [n for n in nodes if n.item_index is None]
    top.sort(key=lambda n: (n.started_at is None, n.started_at or 0.0))
    counts = item_counts or {}
    views = [
        NodeView(
            node=node,
            attempts=by_path.get(node.node_path, []),
            media=_media(run, node),
            item_counts=counts.get(node.node_path, {}),
            item_total=len(loop_items_of(node)) if node.node_type == "loop" else 0,
            run_message=run.message if run.status is RunStatus.PAUSED else None,
        )
        for node in top
    ]
    media: list[Media] = []
    seen: set[str] = set()
    for found in (m for node in [*top, *(item_nodes or [])] for m in _media(run, node)):
        if found.src not in seen:  # a file two nodes name shows once
            seen.add(found.src)
            media.append(found)
    return RunView(
        run=run,
        nodes=views,
        submissions=submissions,
        media=media[:MAX_MEDIA_SHOWN],
        media_total=max(len(media), items_succeeded),
        resubmits=resubmits or [],
    )


@dataclass(frozen=True)
class Progress:
    """How far a run is, at a glance: `done / total` items (or nodes, without a loop),
    spend against the whole run's estimate, and a time left worked out from the pace so far."""

    done: int
    total: int
    unit: Literal["items", "nodes"]
    spent_usd: Decimal
    estimate_usd: Decimal | None
    eta_seconds: float | None

    @property
    def spent_share(self) -> float | None:
        """Spent as a share of the estimate (may pass 1: retries pay again)."""
        if not self.estimate_usd:
            return None
        return float(self.spent_usd / self.estimate_usd)


def progress_of(
    view: RunView, *, node_count: int, estimate_usd: Decimal | None, now: float
) -> Progress:
    """The run's progress: its loops' items when it has any, else its top-level nodes
    (`node_count`, the workflow's); the ETA only while it works and has finished some."""
    run = view.run
    loops = [n for n in view.nodes if n.is_loop]
    if loops:
        done, total = sum(n.items_done for n in loops), sum(n.item_total for n in loops)
        unit: Literal["items", "nodes"] = "items"
    else:
        finished = (NodeStatus.SUCCEEDED, NodeStatus.SKIPPED)
        done = sum(1 for n in view.nodes if n.node.status in finished)
        total, unit = max(node_count, done), "nodes"
    eta = None
    if not view.finished and run.status is not RunStatus.PAUSED and 0 < done < total:
        eta = (now - run.created_at) / done * (total - done)
    return Progress(done, total, unit, run.spent_usd, estimate_usd, eta)


def dom_id(node_path: str) -> str:
    """The id of a node's article on the run page."""
    return "node-" + re.sub(r"[^\w-]", "-", node_path)


def workflow_graph(workflow: Workflow) -> GraphLayout:
    """The workflow page's graph: each box opens that node's parameters."""
    return layout(workflow, href=lambda node_id, _loop: f"#gnode-{node_id}")


def run_graph(view: RunView, workflow: Workflow) -> GraphLayout:
    """The run's graph: boxes coloured by status; a loop's body by its items (failed if one
    failed), linking to its items table; a loop titled with its progress."""
    statuses: dict[str, str] = {}
    notes: dict[str, str] = {}
    for n in view.nodes:
        statuses[n.node.node_id] = n.node.status.value
        if n.is_loop:
            notes[n.node.node_id] = f"{n.items_done} / {n.item_total} items"
            spec = workflow.node(n.node.node_id)
            body = spec.nodes if isinstance(spec, LoopNode) else []
            counts = n.item_counts
            state = (
                "failed" if counts.get("failed")
                else "running" if counts.get("running") or counts.get("queued")
                else n.node.status.value
            )  # fmt: skip
            statuses.update({inner.id: state for inner in body})
    run_id = view.run.run_id

    def href(node_id: str, loop_id: str | None) -> str:
        if loop_id is None:
            return f"#{dom_id(node_id)}"
        return f"/runs/{run_id}/loops/{loop_id}"

    return layout(workflow, statuses=statuses, notes=notes, href=href)


def poll_ms(status: RunStatus) -> int:
    """How often a run page refreshes: briskly while it works, slowly while paused."""
    if status in TERMINAL_RUN_STATUSES:
        return 0
    return 3000 if status is RunStatus.PAUSED else 1000
