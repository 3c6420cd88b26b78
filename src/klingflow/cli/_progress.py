"""Following runs to their end: the live batch display while they run, then a summary.

Shared by `klingflow run` and the `runs retry|skip` commands, which wait the same way: a
process that launched the engine also executes the queued runs it picked up, so it finishes
those before it closes (closing would leave them to the next engine).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import typer
from rich.live import Live
from rich.text import Text

from klingflow.cli._batchview import BatchView, units_of
from klingflow.cli._console import STATUS_STYLE, err, out, print_json, usd
from klingflow.cli._runlog import open_runlog
from klingflow.cli.exit_codes import RUN_NOT_COMPLETED
from klingflow.workflows.records import RunRecord, RunStatus
from klingflow.workflows.runlog import RunLog

if TYPE_CHECKING:  # the engine (DBOS) is loaded by the commands that run workflows
    from klingflow.workflows.engine import Engine

__all__ = ["exit_unless_completed", "finish_runs", "report_runs", "run_files", "summarize"]


def video_paths(value: Any) -> Iterator[str]:
    """Every downloaded file a run's outputs mention."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in ("path", "paths") and inner:
                yield from [inner] if isinstance(inner, str) else inner
            else:
                yield from video_paths(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from video_paths(inner)


def run_files(runlog: RunLog, run: RunRecord) -> list[str]:
    """The files a run's nodes downloaded (this epoch), in node order, each once."""
    nodes = runlog.nodes(run.run_id, run.epoch)
    return list(dict.fromkeys(path for node in nodes for path in video_paths(node.output)))


def summarize(runlog: RunLog, run: RunRecord) -> None:
    """The end of a run, for people: status, files, cost; or what to do next."""
    style = STATUS_STYLE.get(run.status.value, "")
    spent = f" · spent {usd(run.spent_usd)}"
    err.print(Text.assemble((f"{run.run_id} ", "bold"), (run.status.value, style), spent))
    if run.status == RunStatus.PAUSED:
        from klingflow.workflows.steering import describe_paused  # not for `runs show`

        err.print(Text(describe_paused(run), style="yellow"))
    elif run.status != RunStatus.COMPLETED and run.message:
        err.print(Text(run.message, style="red"))
    if run.status == RunStatus.CRASHED:  # a crash is a pause we could not write
        err.print(Text(f"Resume it with `klingflow runs retry {run.run_id}`.", style="yellow"))
    for path in run_files(runlog, run):
        out.print(path)


def report_runs(records: list[RunRecord], *, as_json: bool) -> None:
    """The settled runs: JSON records on stdout, or each run's summary for people."""
    if as_json:
        print_json([record.public_dict() for record in records])
        return
    runlog = open_runlog()
    for record in records:
        summarize(runlog, record)


def exit_unless_completed(records: list[RunRecord]) -> None:
    """Exit `RUN_NOT_COMPLETED` (16) when any run paused, crashed or was cancelled."""
    if any(run.status != RunStatus.COMPLETED for run in records):
        raise typer.Exit(code=RUN_NOT_COMPLETED)


async def _watch(engine: Engine, run_ids: list[str], *, as_json: bool) -> list[RunRecord]:
    """Wait for the runs, showing the batch live (cli/_batchview.py): a summary and a bounded
    table on a terminal, one plain line per state change otherwise."""
    if as_json:
        return await engine.wait(run_ids)
    first = [run for run in map(engine.runlog.get_run, run_ids) if run is not None]
    budgets = [run.budget_usd for run in first]
    known = [b for b in budgets if b is not None]
    total = sum(known, Decimal(0)) if known and len(known) == len(budgets) else None
    view = BatchView(budget_usd=total)

    def look(records: list[RunRecord]) -> None:
        view.update(units_of(engine.runlog, records))

    if not err.is_terminal:

        def print_changes(records: list[RunRecord]) -> None:
            look(records)
            view.print_changes(err)

        return await engine.wait(run_ids, on_poll=print_changes)
    with Live(view, console=err, refresh_per_second=4, transient=True) as live:

        def show(records: list[RunRecord]) -> None:
            look(records)
            live.refresh()

        return await engine.wait(run_ids, on_poll=show)


async def finish_runs(engine: Engine, run_ids: list[str], *, as_json: bool) -> list[RunRecord]:
    """Watch `run_ids` settle, then finish the queued runs this process picked up meanwhile
    (closing the engine would leave them for the next one); returns `run_ids`' records."""
    records = await _watch(engine, run_ids, as_json=as_json)
    while others := await engine.busy_runs(exclude=run_ids):
        err.print(f"finishing {len(others)} queued run(s) this process picked up")
        await _watch(engine, others, as_json=as_json)
    return records
