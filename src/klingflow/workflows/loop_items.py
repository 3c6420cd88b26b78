"""A loop's items as rows: one per item, its status, attempts and cost; counted and paged in
the database, so a run of 10,000 items opens as fast as a run of ten.

An item's status comes from its body nodes: `failed` if one failed, `running` while one runs
or until every body node has finished, `succeeded` once all did (a node skipped by its `if`
counts as done), `skipped` when every node was skipped, and `queued` before any started.
Reads only, over the run log's tables; `skip_items` is the one write, for the UI's "skip
selected items" on a paused loop. Statuses are worked out and counted in the database, and a
page reads only its own rows, so a loop of 100,000 items costs one grouped scan, not 100,000
Python objects.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from klingflow.errors import KlingflowError
from klingflow.piapi.points import points_to_usd
from klingflow.workflows.json_size import json_bytes
from klingflow.workflows.records import Attempt, NodeRun, NodeStatus
from klingflow.workflows.runlog import REUSED_STATUSES, RunLog
from klingflow.workflows.schema import attempt_log, node_runs
from klingflow.workflows.templates import template_context

if TYPE_CHECKING:  # the node kinds (and jinja2 under them) are not loaded to read a loop
    from klingflow.workflows.nodes.loop import LoopNode

__all__ = [
    "ITEM_STATUSES",
    "ItemPage",
    "LoopItem",
    "finished_item_nodes",
    "finished_top_level",
    "item_attempts",
    "item_counts",
    "item_label",
    "item_outputs",
    "item_page",
    "output_exceeds",
    "skip_items",
    "top_level",
]

ITEM_STATUSES = ("failed", "running", "queued", "succeeded", "skipped")
"""In the order a filter lists them: what needs a look first."""
_LABEL_KEYS = ("label", "title", "name", "prompt", "slug", "id")
MAX_LABEL_CHARS = 200
"""A rendered `label:` is cut to this many characters in tables."""


@dataclass(frozen=True)
class LoopItem:
    """One item of a loop: its row in the table, and (on its own page) its body nodes."""

    index: int
    label: str
    status: str
    attempts: int
    cost_usd: Decimal | None
    nodes: list[NodeRun] = field(default_factory=list)

    @property
    def number(self) -> int:
        """1-based, as the workflow's `loop.number` and a spreadsheet's rows count."""
        return self.index + 1


@dataclass(frozen=True)
class ItemPage:
    """One page of a loop's items, filtered by status; `matching` counts every page."""

    loop_id: str
    total: int
    counts: dict[str, int]
    items: list[LoopItem]
    status: str | None
    offset: int
    limit: int
    matching: int
    spent_usd: Decimal = Decimal(0)
    """What every item of the loop cost, all pages."""

    @property
    def done(self) -> int:
        """Items finished (succeeded or skipped): what a progress bar counts."""
        return self.counts.get("succeeded", 0) + self.counts.get("skipped", 0)


def item_label(
    item: Any,
    *,
    template: str | None = None,
    index: int = 0,
    length: int = 1,
    inputs: Mapping[str, Any] | None = None,
    trigger: Mapping[str, Any] | None = None,
) -> str:
    """What names an item in a table: the loop's `label:` template rendered for it, else its
    label, title, name, prompt... field, or its JSON. A label that fails to render falls back
    (a name in a table is never worth an error page)."""
    if template is not None:
        from klingflow.workflows.templates import render  # jinja2: only for a label template

        context = template_context(
            trigger=trigger or {}, inputs=inputs or {}, outputs={},
            item=item, index=index, length=length,
        )  # fmt: skip
        try:
            text = render(template, context, node_id=None, field="label")
        except KlingflowError:
            text = None
        if text is not None and str(text).strip():
            return str(text)[:MAX_LABEL_CHARS]
    if isinstance(item, dict):
        for key in _LABEL_KEYS:
            if isinstance(item.get(key), str | int) and str(item[key]).strip():
                return str(item[key])
    return item if isinstance(item, str) else json.dumps(item, ensure_ascii=False)


_HAS_ERROR = sa.and_(
    node_runs.c.error.is_not(None), sa.cast(node_runs.c.error, sa.String) != "null"
)
"""A JSON column keeps Python's None as JSON `null`, which SQL's IS NULL does not see."""


def _in_epoch(run_id: str, epoch: int, *more: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
    """The node rows of one epoch of a run, with `more` conditions: every query here starts so."""
    return sa.and_(node_runs.c.run_id == run_id, node_runs.c.epoch == epoch, *more)


def _item_filter(run_id: str, epoch: int, loop_id: str) -> sa.ColumnElement[bool]:
    """The rows of one loop's items (their body nodes' paths start with `loop_id[`)."""
    return _in_epoch(
        run_id,
        epoch,
        node_runs.c.item_index.is_not(None),
        node_runs.c.node_path.startswith(f"{loop_id}[", autoescape=True),
    )


def _nodes(runlog: RunLog, condition: sa.ColumnElement[bool]) -> list[NodeRun]:
    """The node executions matching `condition`, in the order they started."""
    return runlog.node_runs(node_runs.select().where(condition).order_by(node_runs.c.id))


def _count(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
    return sa.func.sum(sa.case((condition, 1), else_=0))


def _per_item(
    run_id: str, epoch: int, loop_id: str, body_length: int, *more: sa.ColumnElement[bool]
) -> sa.Subquery:
    """One row per started item (of those `more` selects): (item_index, status, attempts,
    cost_points), its status from its body nodes' (see the module docstring), grouped in the
    database."""
    status = node_runs.c.status
    failed = _count(status == NodeStatus.FAILED.value)
    running = _count(status == NodeStatus.RUNNING.value)
    succeeded = _count(status == NodeStatus.SUCCEEDED.value)
    skipped = _count(status == NodeStatus.SKIPPED.value)
    skipped_after_error = _count(sa.and_(status == NodeStatus.SKIPPED.value, _HAS_ERROR))
    item_status = sa.case(
        (failed > 0, "failed"),
        (sa.or_(running > 0, succeeded + skipped < body_length), "running"),
        (sa.or_(skipped_after_error > 0, succeeded == 0), "skipped"),  # by the user, or `if`
        else_="succeeded",
    )
    return (
        sa.select(
            node_runs.c.item_index.label("item_index"),
            item_status.label("status"),
            sa.func.sum(node_runs.c.attempts).label("attempts"),
            sa.func.sum(node_runs.c.cost_points).label("cost_points"),
        )
        .where(_item_filter(run_id, epoch, loop_id), *more)
        .group_by(node_runs.c.item_index)
        .subquery()
    )


_ItemRow = tuple[str, int, Decimal | None]
"""An item's (status, attempts, cost)."""


def _item_rows(runlog: RunLog, query: sa.Select[Any]) -> dict[int, _ItemRow]:
    """Item index -> (status, attempts, cost) for the rows of `_per_item` that `query` picks."""
    return {
        index: (status, int(attempts or 0), None if cost is None else points_to_usd(int(cost)))
        for index, status, attempts, cost in runlog.read(lambda c: list(c.execute(query)))
    }


def _counts_query(run_id: str, epoch: int, loop_id: str, body_length: int) -> sa.Select[Any]:
    """(status, items, cost_points) rows of the loop's started items, grouped by status.

    A body of one node (a batch's usual `kling.video`) makes an item its node: its status is
    the node's, counted row by row. Grouping each item's rows first (`_per_item`: its
    aggregates per item, not the rows read, are the cost) took three times as long, for the
    same counts (SQLite, 100,000 items: 0.27 s of CPU against 0.09)."""
    if body_length != 1:
        items = _per_item(run_id, epoch, loop_id, body_length)
        return sa.select(
            items.c.status, sa.func.count(), sa.func.sum(items.c.cost_points)
        ).group_by(items.c.status)
    status = node_runs.c.status
    shown = (NodeStatus.FAILED, NodeStatus.SUCCEEDED, NodeStatus.SKIPPED)
    item_status = sa.case(*((status == s.value, s.value) for s in shown), else_="running")
    return (
        sa.select(item_status, sa.func.count(), sa.func.sum(node_runs.c.cost_points))
        .where(_item_filter(run_id, epoch, loop_id))
        .group_by(item_status)
    )


def _counts(runlog: RunLog, query: sa.Select[Any], *, total: int) -> tuple[Counter[str], Decimal]:
    """Items by status (`queued`: not started), and what they cost in all, in one scan of
    `_counts_query`'s rows."""
    rows = runlog.read(lambda c: list(c.execute(query)))
    counts: Counter[str] = Counter({status: count for status, count, _ in rows})
    counts["queued"] = max(0, total - sum(counts.values()))
    return counts, points_to_usd(sum(int(points or 0) for _, _, points in rows))


def item_counts(
    runlog: RunLog, run_id: str, epoch: int, loop_id: str, *, total: int, body_length: int
) -> dict[str, int]:
    """How many of the loop's `total` items are in each status (`queued`: not started)."""
    query = _counts_query(run_id, epoch, loop_id, body_length)
    counts, _ = _counts(runlog, query, total=total)
    return {status: counts[status] for status in ITEM_STATUSES if counts[status]}


def _page_rows(
    runlog: RunLog,
    items: sa.Subquery,
    page: Callable[[int, int], sa.Subquery],
    *,
    total: int,
    status: str | None,
    offset: int,
    limit: int,
) -> list[tuple[int, str, int, Decimal | None]]:
    """The page's (index, status, attempts, cost), reading only the page's rows where it can:
    in item order every index is an item (a missing row is a queued one), so `page(start,
    end)` groups those rows alone; a status picks its rows in the database; only `queued`,
    which has no rows, lists the started indices."""
    indices: Sequence[int]
    if status is None:
        end = min(total, offset + limit)
        rows = _item_rows(runlog, sa.select(page(offset, end)))
        indices = range(offset, end)
    elif status == "queued":
        started = runlog.read(lambda c: set(c.execute(sa.select(items.c.item_index)).scalars()))
        indices = [i for i in range(total) if i not in started][offset : offset + limit]
        rows = {}
    else:
        rows = _item_rows(
            runlog,
            sa.select(items)
            .where(items.c.status == status, items.c.item_index < total)
            .order_by(items.c.item_index)
            .offset(offset)
            .limit(limit),
        )
        indices = sorted(rows)
    return [(index, *rows.get(index, ("queued", 0, None))) for index in indices]


def item_page(
    runlog: RunLog,
    run_id: str,
    epoch: int,
    loop_id: str,
    *,
    items: Sequence[Any],
    body_length: int,
    status: str | None = None,
    offset: int = 0,
    limit: int = 50,
    label: str | None = None,
    inputs: Mapping[str, Any] | None = None,
    trigger: Mapping[str, Any] | None = None,
) -> ItemPage:
    """A page of the loop's items in item order (only those in `status`, when given); its
    rows carry their body nodes, and their names from the loop's `label` template. Counted
    by status in the database; only the page's rows, nodes and item values are read."""
    total = len(items)
    per_item = _per_item(run_id, epoch, loop_id, body_length)

    def page(start: int, end: int) -> sa.Subquery:
        index = node_runs.c.item_index
        return _per_item(run_id, epoch, loop_id, body_length, index >= start, index < end)

    query = _counts_query(run_id, epoch, loop_id, body_length)
    counts, spent = _counts(runlog, query, total=total)
    shown = _page_rows(
        runlog, per_item, page, total=total, status=status, offset=offset, limit=limit
    )
    nodes = _nodes_of(runlog, run_id, epoch, loop_id, [row[0] for row in shown])
    fetch = getattr(items, "fetch", None)
    if fetch is not None:  # a list too big to load whole reads the page's values at once
        fetch([row[0] for row in shown])
    return ItemPage(
        loop_id=loop_id,
        total=total,
        counts={s: counts[s] for s in ITEM_STATUSES if counts[s]},
        items=[
            LoopItem(
                index,
                item_label(
                    items[index],
                    template=label,
                    index=index,
                    length=total,
                    inputs=inputs,
                    trigger=trigger,
                ),
                state,
                tries,
                cost,
                nodes.get(index, []),
            )
            for index, state, tries, cost in shown
        ],
        status=status,
        offset=offset,
        limit=limit,
        matching=total if status is None else counts[status],
        spent_usd=spent,
    )


def _nodes_of(
    runlog: RunLog, run_id: str, epoch: int, loop_id: str, indices: list[int]
) -> dict[int, list[NodeRun]]:
    if not indices:
        return {}
    found: dict[int, list[NodeRun]] = {}
    chosen = _in_epoch(  # the IN list on the index: the page's rows, not every item's
        run_id,
        epoch,
        node_runs.c.item_index.in_(indices),
        node_runs.c.node_path.startswith(f"{loop_id}[", autoescape=True),
    )
    for node in _nodes(runlog, chosen):
        found.setdefault(node.item_index or 0, []).append(node)
    return found


def item_attempts(runlog: RunLog, run_id: str, epoch: int, paths: list[str]) -> list[Attempt]:
    """The attempts of some nodes (one item's body), in order."""
    return runlog.attempt_rows(
        attempt_log.select()
        .where(
            attempt_log.c.run_id == run_id,
            attempt_log.c.epoch == epoch,
            attempt_log.c.node_path.in_(paths),
        )
        .order_by(attempt_log.c.id)
    )


def finished_item_nodes(runlog: RunLog, run_id: str, epoch: int, *, limit: int) -> list[NodeRun]:
    """The first `limit` succeeded item nodes of the run's loops, in item order (a gallery)."""
    succeeded = _in_epoch(
        run_id,
        epoch,
        node_runs.c.item_index.is_not(None),
        node_runs.c.status == NodeStatus.SUCCEEDED.value,
    )
    return runlog.node_runs(
        node_runs.select()
        .where(succeeded)
        .order_by(node_runs.c.item_index, node_runs.c.id)
        .limit(limit)
    )


def item_outputs(
    runlog: RunLog, run_id: str, epoch: int, loop_id: str, body: Sequence[str], start: int,
    end: int,
) -> list[dict[str, Any] | None]:  # fmt: skip
    """Items `start` to `end` (excluded) of a loop's output, read from their body nodes: in
    item order, `{body node id: output}` (None for a node skipped) for an item whose body
    nodes all succeeded or were skipped, else None (failed, or not finished). One query on
    the item index, so a page costs its own rows whatever the loop's size."""
    query = sa.select(node_runs.c.item_index, node_runs.c.node_id, node_runs.c.output).where(
        _item_filter(run_id, epoch, loop_id),
        node_runs.c.status.in_(REUSED_STATUSES),
        node_runs.c.item_index >= start,
        node_runs.c.item_index < end,
    )
    found: list[dict[str, Any] | None] = [None] * max(0, end - start)
    for index, node_id, output in runlog.read(lambda c: list(c.execute(query))):
        entry = found[index - start]
        if entry is None:
            entry = found[index - start] = {}
        entry[node_id] = output
    for position, entry in enumerate(found):
        if entry is None:
            continue
        if len(entry) < len(body):
            found[position] = None  # a body node failed or never ran
        elif tuple(entry) != tuple(body):
            found[position] = {node_id: entry[node_id] for node_id in body}  # in body order
    return found


def output_exceeds(
    runlog: RunLog, run_id: str, epoch: int, loop_id: str, *, length: int, max_bytes: int
) -> bool:
    """Whether a loop's whole output is over `max_bytes` of JSON (about), measured in the
    database without reading it (`json_bytes`): its items' recorded outputs and their keys.
    A loop whose items alone are over (6 bytes each at least) is answered without a look:
    a 100,000-item loop's outputs are never summed to be left out."""
    if 6 * length > max_bytes:
        return True
    rows = sa.select(
        sa.func.count(),
        sa.func.sum(json_bytes(node_runs.c.output) + sa.func.length(node_runs.c.node_id)),
    ).where(_item_filter(run_id, epoch, loop_id), node_runs.c.item_index < length)
    count, total = runlog.read(lambda c: c.execute(rows).one())
    return int(total or 0) + 6 * int(count or 0) + 6 * length > max_bytes


def finished_top_level(runlog: RunLog, run_id: str, epoch: int) -> dict[str, Any]:
    """The outputs of the run's succeeded or skipped nodes outside any loop item, by path:
    what a new pass over the run reuses (without reading a loop's 100,000 item nodes)."""
    query = sa.select(node_runs.c.node_path, node_runs.c.output).where(
        _in_epoch(
            run_id, epoch, node_runs.c.item_index.is_(None), node_runs.c.status.in_(REUSED_STATUSES)
        )
    )
    return runlog.read(lambda c: {path: output for path, output in c.execute(query)})


def top_level(runlog: RunLog, run_id: str, epoch: int) -> tuple[list[NodeRun], list[Attempt]]:
    """The run's top-level nodes and their attempts, without any loop item's."""
    nodes = _nodes(runlog, _in_epoch(run_id, epoch, node_runs.c.item_index.is_(None)))
    return nodes, item_attempts(runlog, run_id, epoch, [n.node_path for n in nodes])


def skip_items(runlog: RunLog, run_id: str, epoch: int, loop: LoopNode, indices: list[int]) -> int:
    """Mark these items' unfinished body nodes skipped (those not reached yet too), so the
    loop's next retry reuses them (as None) instead of running them again; returns how many
    items changed. Succeeded nodes keep their output."""
    recorded = _nodes_of(runlog, run_id, epoch, loop.id, indices)
    changed = 0
    for index in indices:
        body = {n.node_id: n for n in recorded.get(index, [])}
        touched = False
        for spec in loop.nodes:
            node = body.get(spec.id)
            if node is not None and node.status in (NodeStatus.SUCCEEDED, NodeStatus.SKIPPED):
                continue
            path = f"{loop.id}[{index}].{spec.id}"
            if node is None:
                runlog.node_started(
                    run_id, epoch, path, node_id=spec.id, node_type=spec.type,
                    item_index=index, inputs=None,
                )  # fmt: skip
            error = (None if node is None else node.error) or {
                "type": "Skipped",
                "message": "skipped by the user before it ran",
            }
            runlog.node_finished(run_id, epoch, path, status=NodeStatus.SKIPPED, error=error)
            touched = True
        changed += touched
    return changed
