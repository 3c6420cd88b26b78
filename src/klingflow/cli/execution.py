"""`klingflow run` and `klingflow worker`: the processes that execute runs.

Runs execute in whichever process has the engine launched: `klingflow run` (until its runs
finish or pause), `klingflow worker`, or `runs retry`. A run that paused stays paused,
durably, until it is told what to do (`klingflow runs ...`, cli/runs.py).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from klingflow.cli._console import err, out, print_json, require_key, usd
from klingflow.cli._errors import handles_errors
from klingflow.cli._options import AsJson, LogFormatOption

# The engine (DBOS), the node kinds and the client are imported when a command runs, not to
# parse its options: `klingflow run --help` starts as fast as `klingflow --help`.
if TYPE_CHECKING:
    from klingflow.workflows.estimate import RunEstimate
    from klingflow.workflows.records import RunRecord

__all__ = ["run", "show_estimates", "worker"]


def show_estimates(estimates: list[RunEstimate], *, as_json: bool) -> None:
    """One line per paid submission on stdout, then the total (each run's, if several)."""
    if as_json:
        print_json([estimate.public_dict() for estimate in estimates])
        return
    several = len(estimates) > 1
    for number, estimate in enumerate(estimates):
        prefix = f"run {number + 1}  " if several else ""  # counted from 1, like rows
        for node in estimate.nodes:
            price = "unknown" if node.usd is None else usd(node.usd)
            note = f"  ({node.note})" if node.note else ""
            out.print(f"{prefix}{node.node_path}  {price}{note}", markup=False, highlight=False)
        if estimate.over_budget:
            assert estimate.budget_usd is not None
            err.print(
                f"{prefix}over the workflow's budget of {usd(estimate.budget_usd)}: the run "
                "would pause before the submission that passes it",
                markup=False,
            )
    total = sum((estimate.total_usd for estimate in estimates), Decimal(0))
    count = sum(len(estimate.nodes) for estimate in estimates)
    unknown = sum(estimate.unknown for estimate in estimates)
    runs = f" for {len(estimates)} runs" if several else ""
    line = f"estimated {usd(total)}{runs} · {count} paid submission{'s' if count != 1 else ''}"
    if unknown:
        line += f", {unknown} priced only when the run gets there"
    err.print(line + " · nothing was sent", markup=False)


@handles_errors
def run(
    file: Annotated[Path, typer.Argument(help="The workflow file (YAML or JSON).")],
    inputs: Annotated[
        list[str] | None,
        typer.Option("-i", "--input", help="key=value (JSON values; @file.csv for rows)."),
    ] = None,
    input_file: Annotated[
        Path | None, typer.Option("--input-file", help="A JSON/YAML object of inputs.")
    ] = None,
    rows: Annotated[
        Path | None,
        typer.Option("--rows", help="CSV or JSONL: start one run per row (the row trigger)."),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option("--idempotency-key", help="The same key always means the same run."),
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", help="Queue the runs and return; a worker runs them.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print what the runs would cost; start and send nothing."),
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Run a workflow durably: live progress, then the run id, outputs and video paths."""
    from klingflow.cli._run_inputs import build_payloads
    from klingflow.workflows.estimate import estimate_run
    from klingflow.workflows.loading import load_workflow
    from klingflow.workflows.tables import coerce_row

    workflow = load_workflow(file)
    payloads = [coerce_row(workflow, p) for p in build_payloads(inputs, input_file, rows)]
    for payload in payloads:  # every row is checked before the first run starts
        workflow.resolve_inputs(payload)
    if dry_run:
        show_estimates([estimate_run(workflow, payload) for payload in payloads], as_json=as_json)
        return
    require_key()
    from klingflow.cli._progress import exit_unless_completed, finish_runs, report_runs
    from klingflow.workflows.engine import Engine, RunQueue  # DBOS: not for a --dry-run

    def key(number: int) -> str | None:
        return idempotency_key and (
            idempotency_key if len(payloads) == 1 else f"{idempotency_key}:{number}"
        )

    async def main() -> list[RunRecord]:
        if detach:  # queued only: a worker (or `serve`) executes them
            async with RunQueue() as queue:
                return [
                    await queue.start_run(workflow, payload, idempotency_key=key(number))
                    for number, payload in enumerate(payloads)
                ]
        async with Engine() as engine:
            started = [
                await engine.start_run(workflow, payload, idempotency_key=key(number))
                for number, payload in enumerate(payloads)
            ]
            return await finish_runs(engine, [r.run_id for r in started], as_json=as_json)

    records = asyncio.run(main())
    if detach and not as_json:
        for record in records:
            out.print(record.run_id)
        err.print("queued; `klingflow worker` (or `klingflow serve`) runs them")
        return
    report_runs(records, as_json=as_json)
    if not detach:
        exit_unless_completed(records)


@handles_errors
def worker(log_format: LogFormatOption = "text") -> None:
    """Run queued and recovered runs, and fire the schedules of published workflows, until
    interrupted (Ctrl-C). Logs each run it starts, pauses and finishes on stderr."""
    from klingflow.cli._runlogs import log_runs
    from klingflow.settings import Settings
    from klingflow.workflows.engine import Engine
    from klingflow.workflows.registry import WorkflowRegistry
    from klingflow.workflows.schedules import Scheduler

    settings = Settings()
    require_key()
    log_runs(log_format)

    async def main() -> None:
        async with (
            Engine(settings, executor_id=settings.executor_id, role="worker") as engine,
            Scheduler(engine, WorkflowRegistry(engine.runlog.engine)),
        ):
            where = engine.runlog.engine.url  # its password masked
            err.print(f"klingflow worker {engine.executor_id} on {where}")
            while True:
                await asyncio.sleep(3600)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        err.print("stopped")
