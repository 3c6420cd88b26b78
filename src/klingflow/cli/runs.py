"""`klingflow runs list|show|retry|skip|cancel`: look at runs and steer paused ones.

A paused run waits, durably, for one of these commands; `retry` and `skip` then follow the
run to its end as `klingflow run` does (cli/_progress.py), since this process executes it.
`list` and `show` only read the run log: they load neither DBOS nor the engine, and `show`
reads one page of a loop's items (`workflows/run_detail.py`), so a batch of 100,000 videos
shows as fast as one of five.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from klingflow.cli._console import STATUS_STYLE, err, out, print_json, require_key, usd
from klingflow.cli._errors import handles_errors
from klingflow.cli._options import AsJson, RunId
from klingflow.cli._progress import video_paths
from klingflow.cli._runlog import open_runlog, resolve_run_id
from klingflow.errors import InvalidRequestError, RunNotFoundError
from klingflow.workflows.records import RunRecord, RunStatus
from klingflow.workflows.run_detail import (
    ITEMS_PER_PAGE,
    MAX_ITEMS_PER_PAGE,
    ItemStatus,
    LoopPublic,
    RunDetailPublic,
    RunPublic,
    run_detail,
)

if TYPE_CHECKING:  # steering (and the engine under it) is loaded by the commands that steer
    from klingflow.workflows.steering import Command

__all__ = ["print_rows", "runs_app"]

runs_app = typer.Typer(
    help="Look at runs and steer paused ones: list, show, retry, skip, cancel.",
    no_args_is_help=True,
)


def _time(stamp: float | None) -> str:
    """A moment with its zone: `2026-12-06 02:31:25 UTC`."""
    if stamp is None:
        return ""
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@runs_app.command("list")
@handles_errors
def list_runs(
    status: Annotated[RunStatus | None, typer.Option(help="Only runs with this status.")] = None,
    workflow: Annotated[str | None, typer.Option(help="Only runs of this workflow.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    as_json: AsJson = False,
) -> None:
    """The newest runs, with their status and spend."""
    runlog = open_runlog()
    records = runlog.list_runs(status=status, workflow_name=workflow, limit=limit)
    if as_json:
        print_json([record.public_dict() for record in records])
        return
    rows = [
        (
            record.run_id,
            record.workflow_name,
            record.status.value,
            usd(record.spent_usd),
            _time(record.created_at),
            record.paused_node or (record.message or ""),
        )
        for record in records
    ]
    print_rows(("run", "workflow", "status", "spent", "created", "paused on / message"), rows)


def print_rows(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    """A table on a terminal (every column but the last kept whole, statuses coloured);
    piped, one tab-separated line per row, header first, nothing cut or wrapped."""
    if not out.is_terminal:
        for row in [header, *rows]:
            typer.echo("\t".join(row))  # not rich: it would expand the tabs
        return
    table = Table(*header)
    for column in table.columns[:-1]:
        column.no_wrap = True
    status = next(i for i, name in enumerate(header) if name in ("status", "state"))
    for row in rows:
        cells: list[str | Text] = list(row)
        cells[status] = Text(row[status], style=STATUS_STYLE.get(row[status], ""))
        table.add_row(*cells)
    out.print(table)


ItemStatusOption = Annotated[
    ItemStatus | None, typer.Option("--status", help="Only loop items in this status.")
]
LimitOption = Annotated[
    int,
    typer.Option(min=1, max=MAX_ITEMS_PER_PAGE, help="Loop items per page."),
]
OffsetOption = Annotated[
    int | None, typer.Option(min=0, help="The first loop item shown (0 is the first).")
]
PageOption = Annotated[
    int | None, typer.Option(min=1, help="The page of loop items shown (1 is the first).")
]


@runs_app.command("show")
@handles_errors
def show(
    run_id: RunId,
    items: Annotated[
        bool, typer.Option("--items", help="List the loop items: number, label, status, cost.")
    ] = False,
    status: ItemStatusOption = None,
    limit: LimitOption = ITEMS_PER_PAGE,
    offset: OffsetOption = None,
    page: PageOption = None,
    as_json: AsJson = False,
) -> None:
    """A run: its nodes with attempts, errors and PiAPI submissions; a loop's items counted
    by status with their spend, and one page of them (--items lists them, --status, --page
    or --offset choose which). --json prints what GET /api/runs/{id} answers."""
    if offset is not None and page is not None:
        raise typer.BadParameter("give --offset or --page, not both", param_hint="'--page'")
    first = offset if offset is not None else ((page or 1) - 1) * limit
    runlog = open_runlog()
    run_id = resolve_run_id(runlog, run_id)
    detail = run_detail(runlog, run_id, status=status, offset=first, limit=limit)
    if detail is None:
        raise RunNotFoundError(run_id)
    if as_json:
        print_json(detail.model_dump(mode="json"))
        return
    record = detail.run
    _print_run(record)
    if items:
        for loop in detail.loops:
            _print_items(record.run_id, loop)
        return
    _print_nodes(record, detail)
    for loop in detail.loops:
        out.print(_loop_line(record.run_id, loop), markup=False, highlight=False)


def _print_run(record: RunPublic) -> None:
    out.print(
        f"[bold]{record.run_id}[/] {record.workflow_name} ({record.workflow_hash[:12]}) "
        f"[{STATUS_STYLE.get(record.status.value, '')}]{record.status.value}[/]"
    )
    budget = "none" if record.budget_usd is None else usd(record.budget_usd)
    out.print(
        f"  spent {usd(record.spent_usd)} · reserved {usd(record.reserved_usd)} · "
        f"budget {budget} · created {_time(record.created_at)}"
    )
    if record.message:
        out.print(f"  {record.message}", markup=False)


def _money(amount: Decimal | None) -> str:
    return "" if amount is None else usd(amount)


def _print_nodes(record: RunPublic, detail: RunDetailPublic) -> None:
    """The nodes shown (top level, and the items of the page), their submissions, the
    attempts that failed and the files they made."""
    print_rows(
        ("node", "status", "attempts", "task", "cost", "error"),
        [
            (
                node.node_path
                if node.epoch == record.epoch
                else f"{node.node_path} (epoch {node.epoch})",
                node.status.value,
                str(node.attempts),
                node.task_id or "",
                _money(node.cost_usd),
                (node.error or {}).get("message", "")[:120],
            )
            for node in detail.nodes
        ],
    )
    if detail.submissions:  # every paid submission, so "was I charged twice?" is answered
        out.print("submissions:")
        print_rows(
            ("node", "state", "task", "estimated", "sent", "note"),
            [
                (
                    intent.node_path,
                    intent.state.value,
                    intent.task_id or "",
                    usd(intent.estimate_usd),
                    _time(intent.created_at),
                    intent.note or "",
                )
                for intent in detail.submissions
            ],
        )
    counts = detail.submission_counts
    if sum(counts.values()) > len(detail.submissions):
        listed = " · ".join(f"{n} {state}" for state, n in counts.items())
        out.print(f"submissions in all: {listed}", markup=False, highlight=False)
    failures = [a for a in detail.attempts if a.error]
    if failures:
        out.print("attempts that failed:")
        for attempt in failures:
            error = attempt.error or {}
            retry = (
                f" -> retry in {attempt.retry_in_seconds:.1f} s" if attempt.retry_in_seconds else ""
            )
            code = f" [code {error.get('code')}]" if error.get("code") else ""
            out.print(
                f"  {attempt.node_path} #{attempt.number}: {error.get('type')}{code}: "
                f"{error.get('message', '')[:160]}{retry}",
                markup=False,
            )
    epoch_nodes = [n for n in detail.nodes if n.epoch == record.epoch]
    for path in dict.fromkeys(p for node in epoch_nodes for p in video_paths(node.output)):
        out.print(path)


def _span(loop: LoopPublic) -> str:
    """`items 1-50 of 20000` (of those in the filter), and how to see the next page."""
    which = "" if loop.status is None else f" {loop.status}"
    if not loop.items:
        return f"no{which} items from {loop.offset + 1}"
    span = f"{which} items {loop.offset + 1}-{loop.offset + len(loop.items)} of {loop.matching}"
    more = f" · next: --offset {loop.next_offset}" if loop.next_offset is not None else ""
    return f"shown:{span}{more}"


def _loop_line(run_id: str, loop: LoopPublic) -> str:
    """`each: 20000 items · 19990 succeeded · 10 failed · spent $10.00 · shown: ...`."""
    counts = " · ".join(f"{n} {state}" for state, n in loop.counts.items())
    line = f"{loop.loop_id}: {loop.total} items · {counts} · spent {_money(loop.spent_usd)}"
    line += f" · {_span(loop)}"
    if loop.counts.get("failed") and loop.status is None:
        line += f"\n  the failed ones: klingflow runs show {run_id} --items --status failed"
    return line


def _print_items(run_id: str, loop: LoopPublic) -> None:
    """One page of a loop's items as rows: number, label, status, attempts, cost."""
    out.print(_loop_line(run_id, loop), markup=False, highlight=False)
    print_rows(
        ("#", "item", "status", "attempts", "cost"),
        [
            (
                str(item.index + 1),
                item.label,
                item.status,
                str(item.attempts),
                _money(item.cost_usd),
            )
            for item in loop.items
        ],
    )


def _steer(run_ids: list[str], command: Command, *, wait: bool, as_json: bool) -> None:
    """Send `command` to each run; with `wait`, follow them to their end (exit 16 unless
    every one completed), else print their records as the command left them."""
    from klingflow.cli._progress import exit_unless_completed, finish_runs, report_runs
    from klingflow.workflows.engine import Engine  # DBOS: only commands that steer load it

    require_key()
    runlog = open_runlog()
    run_ids = [resolve_run_id(runlog, run_id) for run_id in run_ids]  # unique prefixes too

    async def main() -> list[RunRecord]:
        async with Engine() as engine:
            for run_id in run_ids:
                await engine.command(run_id, command)
            if not wait:
                return [r for r in map(engine.runlog.get_run, run_ids) if r is not None]
            # Give the (recovered) workflow a moment to pick the message up.
            started = time.monotonic()
            records = await engine.wait(run_ids, timeout_seconds=0.5)
            while any(r.status == RunStatus.QUEUED for r in records):
                if time.monotonic() - started > 30:
                    break
                records = await engine.wait(run_ids, timeout_seconds=0.5)
            return await finish_runs(engine, run_ids, as_json=as_json)

    records = asyncio.run(main())
    report_runs(records, as_json=as_json)
    if wait:
        exit_unless_completed(records)


@runs_app.command("retry")
@handles_errors
def retry(
    run_id: Annotated[str | None, typer.Argument(help="The paused run.")] = None,
    from_start: Annotated[
        bool, typer.Option("--from-start", help="Re-run every node, not just the failed one.")
    ] = False,
    resubmit: Annotated[
        bool,
        typer.Option("--resubmit", help="An uncertain submission may be paid again: accept it."),
    ] = False,
    task_ids: Annotated[
        list[str] | None,
        typer.Option(
            "--task-id",
            help="The PiAPI task an uncertain submission created: ID for the only one, or "
            "NODE_PATH=ID (e.g. 'each[3].video=ID'), repeated for each. Each is confirmed at "
            "PiAPI and matched to its submission first.",
        ),
    ] = None,
    all_paused: Annotated[
        bool, typer.Option("--all-paused", help="Retry every paused run (of --workflow).")
    ] = False,
    workflow: Annotated[str | None, typer.Option(help="With --all-paused: only this one.")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the run.")] = True,
    as_json: AsJson = False,
) -> None:
    """Resume a paused run from its failed node (finished nodes are reused)."""
    from klingflow.workflows.steering import Action, Command, parse_task_ids

    given = parse_task_ids(task_ids or [])
    if given and all_paused:
        raise InvalidRequestError([("--task-id", "settles one run's submissions: give one run id")])
    if all_paused:
        paused = open_runlog().list_runs(
            status=RunStatus.PAUSED, workflow_name=workflow, limit=10_000
        )
        run_ids = [record.run_id for record in paused]
        if not run_ids:
            err.print("no paused runs")
            return
    elif run_id is None:
        raise typer.BadParameter("give a run id, or --all-paused", param_hint="'RUN_ID'")
    else:
        run_ids = [run_id]
    action = Action.RESTART if from_start else Action.RETRY
    _steer(
        run_ids,
        Command(action=action, resubmit=resubmit, task_ids=given or None),
        wait=wait,
        as_json=as_json,
    )


@runs_app.command("skip")
@handles_errors
def skip(run_id: RunId, as_json: AsJson = False) -> None:
    """Skip the node a run paused on (its output becomes null) and go on."""
    from klingflow.workflows.steering import Action, Command

    _steer([run_id], Command(action=Action.SKIP), wait=True, as_json=as_json)


@runs_app.command("cancel")
@handles_errors
def cancel(run_id: RunId, as_json: AsJson = False) -> None:
    """Stop a run for good (tasks already submitted keep running at PiAPI)."""
    from klingflow.workflows.steering import Action, Command

    _steer([run_id], Command(action=Action.CANCEL), wait=False, as_json=as_json)
