"""DBOS's side of the engine: the names it knows, the process's engine, steps, the run.

DBOS registers workflows and steps by name when this is imported, and is one instance per
process: the workflows find the `Engine` launched in this process through `current()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from dbos import DBOS
from dbos._dbos import _get_dbos_instance

from klingflow.errors import KlingflowError, RecordedError
from klingflow.redaction import redact_values
from klingflow.workflows.executor import error_record
from klingflow.workflows.records import RunStatus
from klingflow.workflows.steering import Command

if TYPE_CHECKING:
    from klingflow.workflows.engine._engine import Engine

__all__ = [
    "APPLICATION_NAME",
    "CONTROL_TOPIC",
    "ENGINE_VERSION",
    "PIAPI_QUEUE",
    "RUNS_QUEUE",
    "WorkflowDurable",
    "bind",
    "current",
    "destroy_dbos",
    "durable_step",
    "next_command",
    "recover_executor",
    "run_workflow",
    "running_engine",
    "stop_if_refused",
]

ENGINE_VERSION = "klingflow-engine-1"
"""DBOS application version: change it only with a migration plan for in-flight runs."""

APPLICATION_NAME = "klingflow"
RUNS_QUEUE = "klingflow-runs"
PIAPI_QUEUE = "klingflow-piapi"
CONTROL_TOPIC = "control"
PAUSED_WAIT_SECONDS = 24 * 3600.0

_engine: Engine | None = None


def current() -> Engine:
    """The engine launched in this process, which the workflows run on."""
    if _engine is None:
        raise RuntimeError("no klingflow Engine is running in this process")
    return _engine


def running_engine() -> Engine | None:
    """The engine launched in this process, if any."""
    return _engine


def bind(engine: Engine | None) -> None:
    """Make `engine` the process's one engine (None: none); DBOS is one per process."""
    global _engine
    _engine = engine


def _database_failure(error: BaseException) -> sa.exc.OperationalError | None:
    """The database's failure behind an error, if one is (disk full, read only, an outage
    longer than the window; DBOS recording a step's result raises it as it is, or as the
    cause of its own error). A bug's error (an integrity or programming error) is not one:
    the run records it as `crashed`."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, sa.exc.OperationalError) and not seen.connection_invalidated:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


_STORAGE_REFUSALS = ("database or disk is full", "readonly database", "disk i/o error")
"""SQLite's refusals of a write for want of storage (SQLITE_FULL, _READONLY, _IOERR)."""
_STORAGE_SQLSTATES = frozenset({"53100", "25006"})
"""Postgres's: disk_full, read_only_sql_transaction."""


def _is_storage_refusal(failure: sa.exc.OperationalError) -> bool:
    if getattr(failure.orig, "sqlstate", None) in _STORAGE_SQLSTATES:
        return True
    return any(refusal in str(failure.orig).lower() for refusal in _STORAGE_REFUSALS)


def stop_if_refused(error: Exception) -> None:
    """Keep the database's failure behind `error` for `Engine.wait` (which reports it
    instead of waiting for ever); end the work as a shutdown does (`CancelledError`) if the
    database refused a write for want of storage (disk full, read only).

    DBOS then records no outcome for the step or workflow. It could have: a small write can
    still land in a page the full disk had, and a replay would raise that error for ever.
    The run stays pending for `klingflow worker` on the repaired database. (An outage that
    outlasts the window still ends the run `crashed`, for `runs retry`: docs/workflows.md.)"""
    if (failure := _database_failure(error)) is None:
        return
    engine = current()
    if not engine.is_closing:
        engine.write_failure = failure
    if _is_storage_refusal(failure):
        raise asyncio.CancelledError(str(failure)) from error


@DBOS.step(name="klingflow.step")
async def durable_step(name: str, fn: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    """Run `fn` as a checkpointed step; our errors are recorded as data, not exceptions.

    What it returns is stored by DBOS (`operation_outputs`), so known secrets (the PiAPI key,
    the webhook secret, the chat key, the API token) are masked in it, as in the run log.
    """
    secrets = current().runlog.secrets
    try:
        return {"ok": redact_values(await fn(), secrets)}
    except KlingflowError as error:
        return {"err": redact_values(error_record(error), secrets), "step": name}
    except Exception as error:
        stop_if_refused(error)
        raise


class WorkflowDurable:
    """Durability at the top level of a run: DBOS steps, durable sleeps and receives."""

    async def step(self, name: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """A DBOS step; an error it recorded is raised again as `RecordedError`."""
        result = await durable_step(name, fn)
        if "err" in result:
            raise RecordedError(result["err"])
        return result["ok"]

    async def sleep(self, seconds: float, *, wake_topic: str | None = None) -> None:
        """A durable sleep, or a durable `recv` on `wake_topic` that a webhook can end."""
        if wake_topic is None:
            await DBOS.sleep_async(seconds)
        else:
            await DBOS.recv_async(wake_topic, timeout_seconds=seconds)


async def next_command() -> Command:
    """Wait (durably, for as long as it takes) for a command on the run's control topic."""
    while True:
        message = await DBOS.recv_async(CONTROL_TOPIC, timeout_seconds=PAUSED_WAIT_SECONDS)
        if (command := Command.from_message(message)) is not None:
            return command


@DBOS.workflow(name="klingflow.run", max_recovery_attempts=50)
async def run_workflow(run_id: str) -> dict[str, Any]:
    """The run `run_id`, from its first node to its end (lifecycle.py); a bug crashes it."""
    engine = current()
    try:
        with engine.running():  # a write the database refused leaves the run pending
            # DBOS stores the return value (`workflow_status.output`): secrets masked
            outputs: dict[str, Any] = redact_values(
                await engine._run(run_id), engine.runlog.secrets
            )
            return outputs
    except Exception as error:  # recorded as `crashed` (a bug, not a node failure), raised
        if engine.is_closing:  # cut off by a shutdown: left pending for the next engine
            raise
        engine.runlog.set_status(
            run_id, RunStatus.CRASHED, message=f"{type(error).__name__}: {error}"
        )
        raise


async def destroy_dbos() -> None:
    """`DBOS.destroy()` off the event loop, then wait for the runs its queue threads handed
    to this loop meanwhile (`Engine.running` leaves each pending for the next engine).

    On the loop it deadlocks with a queue thread handing a run over: the thread waits for
    the loop, the loop waits in `destroy` for the thread. `destroy` gives up after 10 s and
    leaves the thread to hand the run to a loop that may be closed by then.
    """
    # DBOS leaves its shut-down pool as the loop's default executor (dbos-notes §1).
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor())
    instance = _get_dbos_instance()
    await asyncio.to_thread(DBOS.destroy)
    # Private: the tasks DBOS starts for dequeued runs; no public handle reaches them.
    await asyncio.gather(*instance._workflow_tasks, return_exceptions=True)


def recover_executor(executor_id: str) -> int:
    """Hand a dead executor's pending workflows back to their queues; returns how many.

    A call into DBOS's private API (so is `destroy_dbos`'s task set): open-source DBOS has
    no public way to recover another executor's workflows (shared/dbos-notes.md §0). Since
    3.4 it re-enqueues them on their own queues, and only while they still belong to
    `executor_id`, so a repeat or a second recoverer is harmless. Whether a PiAPI task is
    submitted again is decided by the run log's intents when the workflow replays, not here.
    """
    # Private on purpose: DBOS's public recovery serves only this process's own executor id.
    return len(DBOS._recover_pending_workflows([executor_id]))
