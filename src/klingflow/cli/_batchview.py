"""What `klingflow run` shows while a batch runs: a summary line above a bounded table of
what is in flight, or, without a terminal, one plain line per state change.

The units of a batch are its runs (`--rows`: one run per row), or, for a single run, the
items of its first loop (the batch example: one item per CSV row). Each unit is labelled by
its row (`slug`, else `prompt`), not by an id. A unit waiting for a slot (a queued run, a loop
item not yet started) is `queued`, never `running`; finished units only count in the summary.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from klingflow.cli._console import STATUS_STYLE, usd
from klingflow.workflows.records import NodeRun, NodeStatus, RunRecord, RunStatus
from klingflow.workflows.runlog import RunLog

__all__ = ["BatchView", "Unit", "units_of"]

MAX_ROWS = 10
"""In-flight units shown in the table; the rest are counted below it."""

_LABEL_KEYS = ("slug", "name", "title", "prompt")
_DONE = {"completed"}
_FAILED = {"failed", "crashed", "cancelled"}


@dataclass(frozen=True)
class Unit:
    """One row of a batch: its number (from 1), label, status and spend."""

    number: int
    label: str
    status: str
    spent_usd: Decimal


def label_of(row: Any, fallback: str) -> str:
    """A row's `slug` (or name, title, prompt), cut to 40 characters; else `fallback`."""
    if isinstance(row, Mapping):
        for key in _LABEL_KEYS:
            value = row.get(key)
            if isinstance(value, str) and value.strip():
                text = " ".join(value.split())
                return text if len(text) <= 40 else text[:39] + "…"
    return fallback


def units_of(runlog: RunLog, records: Sequence[RunRecord]) -> list[Unit]:
    """The batch's units now: one per run, or one per loop item of a single run."""
    if len(records) == 1:
        items = _loop_items(runlog, records[0])
        if items is not None:
            return items
    # One run without a loop (yet) is named by its workflow; several runs by row, else id.
    single = len(records) == 1
    return [
        Unit(
            number,
            label_of(run.inputs, run.workflow_name if single else run.run_id),
            run.status.value,
            run.spent_usd,
        )
        for number, run in enumerate(records, start=1)
    ]


def _loop_items(runlog: RunLog, run: RunRecord) -> list[Unit] | None:
    nodes = runlog.nodes(run.run_id, run.epoch)
    loop = next((n for n in nodes if n.node_type == "loop" and "[" not in n.node_path), None)
    rows = (loop.inputs or {}).get("items") if loop is not None else None
    if loop is None or not isinstance(rows, list):
        return None
    by_item: dict[int, list[NodeRun]] = {}
    prefix = loop.node_path + "["
    for node in nodes:
        if node.node_path.startswith(prefix) and node.item_index is not None:
            by_item.setdefault(node.item_index, []).append(node)
    return [
        Unit(
            index + 1,
            label_of(row, f"item {index + 1}"),
            _item_status(by_item.get(index, []), run),
            sum((n.cost_usd or Decimal(0) for n in by_item.get(index, [])), Decimal(0)),
        )
        for index, row in enumerate(rows)
    ]


def _item_status(nodes: list[NodeRun], run: RunRecord) -> str:
    if not nodes:  # not started: waiting for a slot of the loop's concurrency
        return "queued" if run.status in (RunStatus.QUEUED, RunStatus.RUNNING) else run.status.value
    if any(n.status == NodeStatus.RUNNING for n in nodes):
        return "running"
    if any(n.status == NodeStatus.FAILED for n in nodes):
        return "paused" if run.status == RunStatus.PAUSED else "failed"
    return "completed"


class BatchView:
    """The live picture of a batch; `update` with fresh units, then render or print."""

    def __init__(self, *, budget_usd: Decimal | None) -> None:
        self.budget_usd = budget_usd
        self.units: list[Unit] = []
        self.started = time.monotonic()
        self._seen: dict[int, str] = {}

    def update(self, units: list[Unit]) -> None:
        """Take the batch's units as they are now (`units_of`), for the next render."""
        self.units = units

    def summary(self) -> str:
        """`12/40 done · 2 paused · $6.00 of $20.00 · ETA 3 m`."""
        total = len(self.units)
        done = sum(1 for u in self.units if u.status in _DONE)
        parts = [f"{done}/{total} done"]
        paused = sum(1 for u in self.units if u.status == "paused")
        failed = sum(1 for u in self.units if u.status in _FAILED)
        parts += [f"{paused} paused"] if paused else []
        parts += [f"{failed} failed"] if failed else []
        spent = sum((u.spent_usd for u in self.units), Decimal(0))
        budget = f" of {usd(self.budget_usd)}" if self.budget_usd is not None else ""
        parts.append(f"{usd(spent)}{budget}")
        left = sum(1 for u in self.units if u.status in ("queued", "running"))
        if done and left:
            seconds = (time.monotonic() - self.started) / done * left
            parts.append(
                f"ETA {round(seconds / 60)} m" if seconds >= 90 else f"ETA {seconds:.0f} s"
            )
        return " · ".join(parts)

    def __rich__(self) -> Group:
        in_flight = [u for u in self.units if u.status in ("running", "queued", "paused")]
        in_flight.sort(key=lambda u: ("running", "paused", "queued").index(u.status))
        table = Table("#", "row", "status", "spent", box=None, pad_edge=False)
        for unit in in_flight[:MAX_ROWS]:
            table.add_row(
                str(unit.number),
                unit.label,
                Text(unit.status, style=STATUS_STYLE.get(unit.status, "")),
                usd(unit.spent_usd),
            )
        parts: list[Any] = [Text(self.summary(), style="bold")]
        if in_flight:
            parts.append(table)
        if len(in_flight) > MAX_ROWS:
            parts.append(Text(f"… and {len(in_flight) - MAX_ROWS} more in flight", style="dim"))
        return Group(*parts)

    def print_changes(self, console: Console) -> None:
        """Without a terminal: one plain line per unit whose status changed since the last."""
        for unit in self.units:
            if self._seen.get(unit.number) == unit.status:
                continue
            self._seen[unit.number] = unit.status
            console.print(
                f"{unit.number}. {unit.label}: {unit.status} · {self.summary()}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
