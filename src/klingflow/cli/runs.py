"""`klingflow run`, `klingflow worker` and `klingflow runs list|show|retry|skip|cancel`.

Runs execute in whichever process has the engine launched: `klingflow run` (until its runs
finish or pause), `klingflow worker`, or `runs retry`. A run that paused stays paused,
durably, until it is told what to do.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table
from rich.text import Text

from klingflow.cli._batchview import BatchView, units_of
from klingflow.cli._console import err, make_client, out, print_json, usd
from klingflow.cli._data import read_data_file
from klingflow.cli._errors import handles_errors
from klingflow.cli._runids import resolve_run_id
from klingflow.cli._runlogs import LogFormatOption, log_runs
from klingflow.errors import InvalidRequestError, RunNotFoundError
from klingflow.settings import Settings
from klingflow.workflows import RunEstimate, estimate_run, load_workflow
from klingflow.workflows.database import make_engine
from klingflow.workflows.engine import Engine, RunQueue
from klingflow.workflows.records import RunRecord, RunStatus
from klingflow.workflows.registry import WorkflowRegistry
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.schedules import Scheduler
from klingflow.workflows.steering import Action, Command, describe_paused, parse_task_ids
from klingflow.workflows.tables import coerce_row, parse_table_bytes

__all__ = ["RUN_NOT_COMPLETED", "run", "runs_app", "worker"]

RUN_NOT_COMPLETED = 16
"""Exit code when a run paused, crashed or was cancelled instead of completing."""

runs_app = typer.Typer(
    help="Look at runs and steer paused ones: list, show, retry, skip, cancel.",
    no_args_is_help=True,
)
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
RunId = Annotated[str, typer.Argument(help="The run id (run-...), or a unique beginning of it.")]


# -- inputs ------------------------------------------------------------------------------------


def read_table(path: Path) -> list[Any]:
    """Rows of a CSV or an Excel .xlsx sheet (as objects), JSON Lines, or a JSON/YAML array."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InvalidRequestError([(str(path), f"cannot read: {error.strerror}")]) from None
    return parse_table_bytes(data, suffix=path.suffix, source=str(path))


TABLE_SUFFIXES = (".csv", ".jsonl", ".json", ".yaml", ".yml")


def parse_input(text: str) -> tuple[str, Any]:
    """`key=value`: JSON when it parses (5, true, [..]), a file's rows for `@file`, else text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise InvalidRequestError([("-i", f"expected key=value, got {text!r}")])
    if value.startswith("@"):
        return key, read_table(Path(value[1:]))
    if Path(value).suffix in TABLE_SUFFIXES and Path(value).is_file():
        err.print(
            f"hint: -i {text} passes the text {value!r}; did you mean {key}=@{value} (its rows)?",
            markup=False,
        )
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def build_payloads(
    inputs: list[str] | None, input_file: Path | None, rows: Path | None
) -> list[dict[str, Any]]:
    """One payload per run: the file, then -i pairs; with --rows, one run per row."""
    base: dict[str, Any] = {}
    if input_file is not None:
        data = read_data_file(input_file)
        if not isinstance(data, dict):
            raise InvalidRequestError([(str(input_file), "must hold an object of inputs")])
        base.update(data)
    base.update(parse_input(item) for item in inputs or [])
    if rows is None:
        return [base]
    table = read_table(rows)
    if not all(isinstance(row, dict) for row in table):
        raise InvalidRequestError([(str(rows), "each row must be an object")])
    return [{**base, **row} for row in table]


def require_key() -> None:
    """Engines talk to PiAPI: without a key, say so (exit 2) instead of a traceback."""
    make_client().close()


# -- showing runs --------------------------------------------------------------------------------


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


STATUS_STYLE = {
    "completed": "green", "succeeded": "green", "running": "cyan", "queued": "dim",
    "paused": "yellow", "failed": "red", "crashed": "red", "cancelled": "magenta",
    "skipped": "dim", "sent": "cyan", "accepted": "cyan", "uncertain": "yellow",
    "rejected": "red", "abandoned": "magenta",
}  # fmt: skip


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
        err.print(Text(describe_paused(run), style="yellow"))
    elif run.status != RunStatus.COMPLETED and run.message:
        err.print(Text(run.message, style="red"))
    if run.status == RunStatus.CRASHED:  # a crash is a pause we could not write
        err.print(Text(f"Resume it with `klingflow runs retry {run.run_id}`.", style="yellow"))
    for path in run_files(runlog, run):
        out.print(path)


def _time(stamp: float | None) -> str:
    """A moment with its zone: `2026-12-06 02:31:25 UTC`."""
    if stamp is None:
        return ""
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def open_runlog() -> RunLog:
    settings = Settings()
    url = settings.resolved_database_url()
    return RunLog(make_engine(url, outage_seconds=settings.database_outage_seconds))


def _exit_for(records: list[RunRecord]) -> None:
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


async def _finish(engine: Engine, run_ids: list[str], *, as_json: bool) -> list[RunRecord]:
    """Watch `run_ids` settle, then finish the queued runs this process picked up meanwhile
    (closing the engine would leave them for the next one); returns `run_ids`' records."""
    records = await _watch(engine, run_ids, as_json=as_json)
    while others := await engine.busy_runs(exclude=run_ids):
        err.print(f"finishing {len(others)} queued run(s) this process picked up")
        await _watch(engine, others, as_json=as_json)
    return records


# -- commands ------------------------------------------------------------------------------------


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
    workflow = load_workflow(file)
    payloads = [coerce_row(workflow, p) for p in build_payloads(inputs, input_file, rows)]
    for payload in payloads:  # every row is checked before the first run starts
        workflow.resolve_inputs(payload)
    if dry_run:
        show_estimates([estimate_run(workflow, payload) for payload in payloads], as_json=as_json)
        return
    require_key()

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
            return await _finish(engine, [r.run_id for r in started], as_json=as_json)

    records = asyncio.run(main())
    if as_json:
        print_json([record.public_dict() for record in records])
    elif detach:
        for record in records:
            out.print(record.run_id)
        err.print("queued; `klingflow worker` (or `klingflow serve`) runs them")
    else:
        runlog = open_runlog()
        for record in records:
            summarize(runlog, record)
    if not detach:
        _exit_for(records)


@handles_errors
def worker(log_format: LogFormatOption = "text") -> None:
    """Run queued and recovered runs, and fire the schedules of published workflows, until
    interrupted (Ctrl-C). Logs each run it starts, pauses and finishes on stderr."""

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


@runs_app.command("show")
@handles_errors
def show(run_id: RunId, as_json: AsJson = False) -> None:
    """A run in full: nodes with inputs, outputs, errors, attempts and PiAPI tasks."""
    runlog = open_runlog()
    run_id = resolve_run_id(runlog, run_id)
    record = runlog.get_run(run_id)
    if record is None:
        raise RunNotFoundError(run_id)
    nodes = runlog.nodes(run_id)
    attempts = runlog.attempts(run_id)
    intents = runlog.intents(run_id)
    if as_json:
        print_json(
            {
                "run": record.public_dict(),
                "nodes": [node.public_dict() for node in nodes],
                "attempts": [attempt.public_dict() for attempt in attempts],
                "submissions": [intent.public_dict() for intent in intents],
            }
        )
        return
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
                "" if node.cost_usd is None else usd(node.cost_usd),
                (node.error or {}).get("message", "")[:120],
            )
            for node in nodes
        ],
    )
    if intents:  # every paid submission, so "was I charged twice?" is answered here too
        out.print("submissions:")
        print_rows(
            ("node", "state", "task", "estimated", "sent", "note"),
            [
                (
                    intent.node_path,
                    intent.state.value,
                    intent.task_id or "",
                    usd(intent.estimated_usd),
                    _time(intent.created_at),
                    intent.note or "",
                )
                for intent in intents
            ],
        )
    failures = [a for a in attempts if a.error]
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
    for path in run_files(runlog, record):
        out.print(path)


def _steer(run_ids: list[str], command: Command, *, wait: bool, as_json: bool) -> None:
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
            return await _finish(engine, run_ids, as_json=as_json)

    records = asyncio.run(main())
    if as_json:
        print_json([record.public_dict() for record in records])
    else:
        runlog = open_runlog()
        for record in records:
            summarize(runlog, record)
    if wait:
        _exit_for(records)


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
    _steer([run_id], Command(action=Action.SKIP), wait=True, as_json=as_json)


@runs_app.command("cancel")
@handles_errors
def cancel(run_id: RunId, as_json: AsJson = False) -> None:
    """Stop a run for good (tasks already submitted keep running at PiAPI)."""
    _steer([run_id], Command(action=Action.CANCEL), wait=False, as_json=as_json)
