"""A run as `GET /api/runs/{id}` and `klingflow runs show --json` show it: one page, whatever
the run's size.

A batch of 100,000 videos has 100,000 item nodes, as many attempts and submissions: listing
them all made the answer megabytes long and seconds slow. So the detail holds the run, its
top-level nodes (every epoch), and for each loop its items counted by status with their
spend and one page of items (each with its body nodes); the attempts and submissions are
those of the nodes shown, and the submissions are counted by state. `offset`, `limit` and
`status` choose the page; `next_offset` says where the next one starts. Every query is
bounded by the page or grouped in the database.

A JSON value over `MAX_VALUE_BYTES` (a run's trigger, inputs or outputs, a node's inputs,
output or error: in a batch, the list of every row or every video) is left out, `null`, and
named in `elided` (an error keeps its type, code and message); the database measures it
without sending it. A loop's items are then read from its stored list one page at a time,
and its outputs are its items' nodes, page by page. A loop node records a reference to its
items' outputs (`loop_output.py`): the detail shows the list it stands for, read from the
items' nodes, while that list is under the limit, as it showed a list stored whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel, Field

from klingflow.formats import MomentJSON, UsdJSON
from klingflow.workflows.json_size import json_bytes
from klingflow.workflows.loop_items import item_page
from klingflow.workflows.loop_output import shown_error, shown_node
from klingflow.workflows.records import (
    Attempt,
    Intent,
    IntentState,
    NodeRun,
    NodeStatus,
    RunRecord,
    RunStatus,
)
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.schema import attempt_log, intents, node_runs, runs, with_budget
from klingflow.workflows.stored_items import StoredItems

__all__ = [
    "ITEMS_PER_PAGE",
    "MAX_ITEMS_PER_PAGE",
    "AttemptPublic",
    "ItemPublic",
    "ItemStatus",
    "LoopPublic",
    "NodePublic",
    "RunDetailPublic",
    "RunPublic",
    "SubmissionPublic",
    "find_run",
    "run_detail",
]

MAX_VALUE_BYTES = 256 * 1024
"""A stored JSON value longer than this is left out of the detail (see `elided`)."""
_Record = TypeVar("_Record", NodeRun, Attempt)

ITEMS_PER_PAGE = 50
"""Items of each loop in one detail, unless asked for more (at most `MAX_ITEMS_PER_PAGE`)."""
MAX_ITEMS_PER_PAGE = 1000

ItemStatus = Literal["failed", "running", "queued", "succeeded", "skipped"]
"""An item's status, as a page's filter takes it (`loop_items.ITEM_STATUSES`)."""


class RunPublic(BaseModel):
    """A run as the run log has it (its workflow text is left out)."""

    run_id: str
    idempotency_key: str | None
    workflow_name: str
    workflow_hash: str
    status: RunStatus
    message: str | None
    paused_node: str | None
    epoch: int
    trigger: dict[str, Any] | None
    """Null when left out for its size (see `RunDetailPublic.elided`), as `inputs`."""
    inputs: dict[str, Any] | None
    outputs: Any
    output_dir: str
    budget_usd: UsdJSON | None
    reserved_usd: UsdJSON
    spent_usd: UsdJSON
    estimate_usd: UsdJSON = Field(validation_alias="estimated_usd")
    created_at: MomentJSON
    updated_at: MomentJSON
    finished_at: MomentJSON | None

    @classmethod
    def of(cls, run: RunRecord) -> RunPublic:
        """The public view of `run`; the idempotency key as the client sent it."""
        public = cls.model_validate(run, from_attributes=True)
        key, scope = run.idempotency_key, f"{run.workflow_name}/"
        if key is not None and key.startswith(scope):  # shown as the client sent it
            public = public.model_copy(update={"idempotency_key": key.removeprefix(scope)})
        return public


class NodePublic(BaseModel):
    """One node execution (loop items have their own, with `item_index`)."""

    node_path: str
    node_id: str
    node_type: str
    epoch: int
    item_index: int | None
    status: NodeStatus
    inputs: Any
    output: Any
    error: dict[str, Any] | None
    attempts: int
    task_id: str | None
    cost_usd: UsdJSON | None
    started_at: MomentJSON | None
    finished_at: MomentJSON | None

    @classmethod
    def of(cls, node: NodeRun) -> NodePublic:
        """The public view of `node`, field by field."""
        return cls(**{name: getattr(node, name) for name in cls.model_fields})


class AttemptPublic(BaseModel):
    """One attempt of a node, failed or not."""

    node_path: str
    number: int
    started_at: MomentJSON
    ended_at: MomentJSON
    error: dict[str, Any] | None
    retry_in_seconds: float | None

    @classmethod
    def of(cls, attempt: Attempt) -> AttemptPublic:
        """The public view of `attempt`, field by field."""
        return cls(**{name: getattr(attempt, name) for name in cls.model_fields})


class SubmissionPublic(BaseModel):
    """A paid submission to PiAPI, recorded before it was sent."""

    intent_id: str
    node_path: str
    state: IntentState
    task_id: str | None
    estimate_usd: UsdJSON = Field(validation_alias="estimated_usd")
    note: str | None
    created_at: MomentJSON

    @classmethod
    def of(cls, intent: Intent) -> SubmissionPublic:
        """The public view of `intent`, the run log's record of a paid submission."""
        return cls.model_validate(intent, from_attributes=True)


class ItemPublic(BaseModel):
    """One item of a loop: its row (its body nodes are in the detail's `nodes`)."""

    index: int
    label: str
    status: str
    attempts: int
    cost_usd: UsdJSON | None


class LoopPublic(BaseModel):
    """A loop of the run: its items counted by status, its spend, and one page of items."""

    loop_id: str
    total: int
    counts: dict[str, int]
    """Items by status (failed, running, queued, succeeded, skipped), only those present."""
    spent_usd: UsdJSON
    status: str | None
    """The page's filter: only items in this status (null: every item)."""
    offset: int
    limit: int
    matching: int
    """Items that pass the filter, on every page."""
    next_offset: int | None
    """Where the next page starts (`?offset=`), null on the last one."""
    items: list[ItemPublic]


class RunDetailPublic(BaseModel):
    """A run with what it did, one page at a time: its top-level nodes, each loop summarised
    with one page of its items (their body nodes are in `nodes`), the attempts and
    submissions of the nodes shown, and every submission counted by state."""

    run: RunPublic
    nodes: list[NodePublic]
    attempts: list[AttemptPublic]
    submissions: list[SubmissionPublic]
    submission_counts: dict[str, int]
    loops: list[LoopPublic]
    elided: list[str]
    """Values left out (null here) for their size, over 256 KiB of JSON: `run.outputs`, or
    `nodes[each].output` (the node path in brackets). A loop's items and outputs are in its
    pages of items."""


def _capped(table: sa.Table, big: tuple[str, ...]) -> list[sa.ColumnElement[Any]]:
    """`table`'s columns, the `big` JSON ones null when over `MAX_VALUE_BYTES`, each with a
    `<name>_elided` flag: the database measures the value and sends it only when small."""
    columns: list[sa.ColumnElement[Any]] = []
    for column in table.c:
        if column.name not in big:
            columns.append(column)
            continue
        over = json_bytes(column) > MAX_VALUE_BYTES
        columns.append(
            sa.type_coerce(sa.case((over, sa.null()), else_=column), sa.JSON).label(column.name)
        )
        columns.append(over.label(f"{column.name}_elided"))
        if column.name == "error":  # kept in short: what a person reads of it
            columns += [column[key].label(f"error_{key}") for key in _ERROR_KEYS]
    return columns


_RUN_VALUES = ("trigger", "inputs", "outputs")
_NODE_VALUES = ("inputs", "output", "error")
_ERROR_KEYS = ("type", "code", "message")
"""What is kept of an error too big to show whole (a loop's carries every item's output)."""


def _elided(row: Any, names: tuple[str, ...], prefix: str) -> list[str]:
    return [f"{prefix}.{name}" for name in names if row._mapping[f"{name}_elided"]]


def _with_short_error(record: _Record, row: Any) -> _Record:
    """`record`, its error cut to its type, code and message when it was too big."""
    if not row._mapping["error_elided"]:
        return record
    short = {key: row._mapping[f"error_{key}"] for key in _ERROR_KEYS}
    return replace(record, error={k: v for k, v in short.items() if v is not None})


def find_run(runlog: RunLog, run_id: str) -> tuple[RunRecord, list[str]] | None:
    """The run (its big values left out, see `MAX_VALUE_BYTES`) and what was left out."""
    query = with_budget(*_capped(runs, _RUN_VALUES)).where(runs.c.run_id == run_id)
    row = runlog.read(lambda c: c.execute(query).first())
    if row is None:
        return None
    return RunRecord.from_row(row), _elided(row, _RUN_VALUES, "run")


@dataclass(frozen=True)
class _LoopSpec:
    """What the detail needs of a `loop` node: its id, the size of its body, its label."""

    id: str
    body_length: int
    label: str | None


def _loop_specs(run: RunRecord) -> dict[str, _LoopSpec]:
    """The run's loops, read from the workflow it stored (validated when the run started):
    validating it again would load every node kind, jinja2 and httpx for three fields."""
    nodes = run.workflow.get("nodes")
    loops = [
        node
        for node in (nodes if isinstance(nodes, list) else [])
        if isinstance(node, dict) and node.get("type") == "loop"
    ]
    return {
        node["id"]: _LoopSpec(node["id"], len(node.get("nodes") or ()), node.get("label"))
        for node in loops
    }


def _loop(
    runlog: RunLog, run: RunRecord, row: NodeRun, spec: _LoopSpec, *, elided: bool,
    status: str | None, offset: int, limit: int,
) -> tuple[LoopPublic, list[NodeRun]]:  # fmt: skip
    inputs = row.inputs if isinstance(row.inputs, dict) else {}
    listed = inputs.get("items")
    items: Sequence[Any] = listed if isinstance(listed, list) else []
    if elided:  # the page in item order is read with the list's length
        items = StoredItems(runlog, row, range(offset, offset + limit) if status is None else ())
    page = item_page(
        runlog, run.run_id, run.epoch, spec.id, items=items,
        body_length=spec.body_length, label=spec.label, inputs=run.inputs, trigger=run.trigger,
        status=status, offset=offset, limit=limit,
    )  # fmt: skip
    end = offset + len(page.items)
    public = LoopPublic(
        loop_id=spec.id, total=page.total, counts=page.counts,
        spent_usd=page.spent_usd, status=status, offset=offset, limit=limit,
        matching=page.matching, next_offset=end if end < page.matching else None,
        items=[
            ItemPublic(index=i.index, label=i.label, status=i.status, attempts=i.attempts,
                       cost_usd=i.cost_usd)
            for i in page.items
        ],
    )  # fmt: skip
    return public, [node for item in page.items for node in item.nodes]


def _top_level(runlog: RunLog, run_id: str, epoch: int) -> list[tuple[NodeRun, list[str]]]:
    """The run's nodes outside any loop item, of every epoch, in the order they started,
    each with the values left out of it for their size."""
    query = (
        sa.select(*_capped(node_runs, _NODE_VALUES))
        .where(
            node_runs.c.run_id == run_id,
            node_runs.c.epoch.in_(range(epoch + 1)),  # each epoch on the index, not every item
            node_runs.c.item_index.is_(None),
        )
        .order_by(node_runs.c.id)
    )
    found = []
    for row in runlog.read(partial(_all_rows, query)):
        prefix = f"nodes[{row.node_path}]"
        node, left_out = shown_node(
            runlog, _with_short_error(NodeRun.from_row(row), row), max_bytes=MAX_VALUE_BYTES
        )
        if "error" in left_out:
            node = replace(node, error=_short(node.error))
        found.append((node, [*_elided(row, _NODE_VALUES, prefix), *_named(left_out, prefix)]))
    return found


def _named(names: list[str], prefix: str) -> list[str]:
    return [f"{prefix}.{name}" for name in names]


def _short(error: dict[str, Any] | None) -> dict[str, Any]:
    """What is kept of an error too big to show whole: its type, code and message."""
    return {key: value for key in _ERROR_KEYS if (value := (error or {}).get(key)) is not None}


def _attempt(runlog: RunLog, run_id: str, row: Any, loops: set[str]) -> Attempt:
    """An attempt as people see it: a loop's partial output as its list while small."""
    attempt = _with_short_error(Attempt.from_row(row), row)
    if attempt.node_path not in loops:
        return attempt
    error, left_out = shown_error(
        runlog, run_id, row.epoch, attempt.error, max_bytes=MAX_VALUE_BYTES
    )
    return replace(attempt, error=_short(error) if left_out else error)


def _all_rows(query: sa.Select[Any], connection: sa.Connection) -> list[Any]:
    return list(connection.execute(query))


def _of_nodes(runlog: RunLog, run_id: str, table: sa.Table, nodes: list[NodeRun]) -> list[Any]:
    """The rows of `table` (attempts or submissions) that belong to `nodes`, in order: looked
    up by (run, epoch, path), the index both tables have, so the page sets the cost."""
    by_epoch: dict[int, list[str]] = {}
    for node in nodes:
        by_epoch.setdefault(node.epoch, []).append(node.node_path)
    order = table.c.id if table is attempt_log else table.c.created_at
    rows: list[Any] = []
    for epoch, paths in sorted(by_epoch.items()):
        for start in range(0, len(paths), 500):  # bounded IN lists
            query = (
                sa.select(*_capped(table, ("error",) if table is attempt_log else ()))
                .where(
                    table.c.run_id == run_id,
                    table.c.epoch == epoch,
                    table.c.node_path.in_(paths[start : start + 500]),
                )
                .order_by(order)
            )
            rows += runlog.read(partial(_all_rows, query))
    rows.sort(key=lambda row: getattr(row, order.name))
    return rows


def _submission_counts(runlog: RunLog, run_id: str) -> dict[str, int]:
    query = (
        sa.select(intents.c.state, sa.func.count())
        .where(intents.c.run_id == run_id)
        .group_by(intents.c.state)
    )
    counted = runlog.read(lambda c: {state: n for state, n in c.execute(query)})
    return {state.value: counted[state.value] for state in IntentState if counted.get(state.value)}


def run_detail(
    runlog: RunLog,
    run_id: str,
    *,
    status: ItemStatus | None = None,
    offset: int = 0,
    limit: int = ITEMS_PER_PAGE,
) -> RunDetailPublic | None:
    """The run with one page of each loop's items (from `offset`, only those in `status`);
    None when the log has no such run."""
    found = find_run(runlog, run_id)
    if found is None:
        return None
    run, elided = found
    top: list[NodeRun] = []
    loops: list[LoopPublic] = []
    item_nodes: list[NodeRun] = []
    specs = _loop_specs(run)
    for node, left_out in _top_level(runlog, run_id, run.epoch):
        top.append(node)
        elided += left_out
        spec = specs.get(node.node_id)
        if node.epoch == run.epoch and node.node_type == "loop" and spec is not None:
            loop, nodes = _loop(
                runlog, run, node, spec, elided=any(n.endswith(".inputs") for n in left_out),
                status=status, offset=offset, limit=limit,
            )  # fmt: skip
            loops.append(loop)
            item_nodes += nodes
    shown = [*top, *item_nodes]
    loops_shown = {node.node_path for node in top if node.node_type == "loop"}
    return RunDetailPublic(
        run=RunPublic.of(run),
        nodes=[NodePublic.of(node) for node in shown],
        attempts=[
            AttemptPublic.of(_attempt(runlog, run_id, row, loops_shown))
            for row in _of_nodes(runlog, run_id, attempt_log, shown)
        ],
        submissions=[
            SubmissionPublic.of(Intent.from_row(row))
            for row in _of_nodes(runlog, run_id, intents, shown)
        ],
        submission_counts=_submission_counts(runlog, run_id),
        loops=loops,
        elided=list(dict.fromkeys(elided)),
    )
