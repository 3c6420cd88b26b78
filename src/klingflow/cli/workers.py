"""`klingflow workers` and `klingflow recover`: the engines sharing a database, and taking
over the runs of one that will not come back (docs/scaling.md)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from klingflow.cli._console import err, out, print_json
from klingflow.cli._errors import handles_errors
from klingflow.cli._options import AsJson
from klingflow.cli.exit_codes import exit_code_of
from klingflow.errors import RunStateError
from klingflow.settings import Settings
from klingflow.workflows.database import make_engine
from klingflow.workflows.workers import WorkerInfo, WorkerRegistry

__all__ = ["recover", "workers"]

RECOVER_REFUSED = exit_code_of(RunStateError)
"""Exit code of `recover` for an executor that looks alive: as for a run whose status does
not allow a command (docs/client.md), nothing was changed."""

STATE_STYLE = {"alive": "green", "silent": "red", "stopped": "dim", "recovered": "yellow"}


def _registry() -> WorkerRegistry:
    return WorkerRegistry(make_engine(Settings().resolved_database_url()))


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _as_dict(worker: WorkerInfo) -> dict[str, object]:
    return {
        "executor_id": worker.executor_id,
        "state": worker.state,
        "mode": worker.mode,
        "hostname": worker.hostname,
        "pid": worker.pid,
        "started_at": worker.started_at,
        "heartbeat_at": worker.heartbeat_at,
        "silent_seconds": round(worker.silent_seconds, 3),
        "recovered_by": worker.recovered_by,
        "recovered_runs": worker.recovered_runs,
    }


@handles_errors
def workers(
    as_json: AsJson = False,
) -> None:
    """The engines (workers, services, `run` processes) that share this database, with their
    last heartbeat."""
    registry = _registry()
    try:
        found = registry.all()
    finally:
        registry.engine.dispose()
    if as_json:
        print_json([_as_dict(worker) for worker in found])
        return
    table = Table("executor", "state", "mode", "host", "pid", "last heartbeat", "recovered by")
    for worker in found:
        recovered = ""
        if worker.recovered_by:
            recovered = f"{worker.recovered_by} ({worker.recovered_runs or 0} workflows)"
        table.add_row(
            worker.executor_id,
            f"[{STATE_STYLE.get(worker.state, '')}]{worker.state}[/]",
            worker.mode,
            worker.hostname,
            str(worker.pid),
            _ago(worker.silent_seconds) if worker.heartbeat_at else "never",
            recovered,
        )
    out.print(table)


@handles_errors
def recover(
    executor_id: Annotated[
        str, typer.Argument(help="The dead executor (see `klingflow workers`).")
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Even if its heartbeat is recent (it may be alive).")
    ] = False,
    wait_seconds: Annotated[
        float,
        typer.Option("--wait", help="Seconds to wait for a live engine to take over.", min=0),
    ] = 30.0,
) -> None:
    """Hand the runs of an executor that will never return to the live workers.

    A live worker claims the request at its next heartbeat and puts the executor's pending
    runs and loop chunks back on their queues; the run log's intents make sure no PiAPI task
    is paid for twice.
    """
    registry = _registry()
    try:
        known = registry.get(executor_id)
        if known is not None and known.state == "alive" and not force:
            err.print(
                f"error: executor {executor_id} beat {_ago(known.silent_seconds)}: it looks "
                "alive. Stop it first, or pass --force if you are sure it is gone."
            )
            raise typer.Exit(code=RECOVER_REFUSED)
        registry.request_recovery(executor_id)
        asked = registry.get(executor_id)
        assert asked is not None
        assert asked.recover_requested_at is not None
        deadline = time.monotonic() + wait_seconds
        while True:
            now = registry.get(executor_id)
            assert now is not None
            if (
                now.recovered_at is not None
                and now.recovered_at >= asked.recover_requested_at
                and now.recovered_runs is not None
            ):
                err.print(
                    f"{now.recovered_by} took over {now.recovered_runs} pending workflows of "
                    f"{executor_id}"
                )
                return
            if time.monotonic() >= deadline:
                live = [w.executor_id for w in registry.all() if w.state == "alive"]
                since = datetime.fromtimestamp(asked.recover_requested_at, UTC)
                err.print(
                    f"recovery of {executor_id} requested at {since:%H:%M:%S} UTC; "
                    + (
                        f"not yet taken by the live engines ({', '.join(live)})"
                        if live
                        else "no engine is alive: the first worker to start will take it"
                    )
                )
                return
            time.sleep(0.2)
    finally:
        registry.engine.dispose()
