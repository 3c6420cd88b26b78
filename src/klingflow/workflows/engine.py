"""The durable engine: runs are DBOS workflows. The only module that imports `dbos`.

Each run is one DBOS workflow whose id is the run id (an idempotency key maps to one run).
Its nodes call `Durable.step` (a DBOS step: recorded, not repeated after a crash) and
`Durable.sleep` (a durable sleep, or a `recv` a webhook can cut short). A paused run stays
alive in a durable `recv` on its control topic, so retry, skip, restart and cancel are
messages, and a restart of the process finds the run exactly where it was.

Loops fan out over the `klingflow-piapi` queue in chunks: one child workflow runs many items
(each with its own journal entries in the run log), so 1,000 videos cost tens of DBOS
workflows rather than thousands of steps.

The traps of shared/dbos-notes.md, and what we do about each:
- steps run at least once -> paid submissions are guarded by the run log's intents;
- a code edit strands in-flight runs -> `application_version` is pinned (ENGINE_VERSION);
- two processes with one executor id run steps twice -> each process locks its own slot;
- unbounded thread pool -> `max_executor_threads`;
- pickle by default, secrets in arguments -> portable JSON, and only ids are arguments;
- attempts are not stored -> the run log stores every attempt;
- Python >= 3.12 with SQLite < 3.42 cannot launch -> refused with a clear message.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
import sqlite3
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

import sqlalchemy as sa
from dbos import (
    DBOS,
    DBOSClient,
    DBOSPortableJSONSerializer,
    EnqueueOptions,
    SetWorkflowID,
    WorkflowHandleAsync,
)
from pydantic import SecretStr

from klingflow.errors import (
    InvalidRequestError,
    KlingflowError,
    LoopItemsFailedError,
    RecordedError,
    RunNotFoundError,
    RunStateError,
)
from klingflow.piapi import AsyncPiAPI, AsyncWebhookEvents, Task, WaitPolicy
from klingflow.piapi.polling import StatusPoller
from klingflow.piapi.pricing import DEFAULT_PRICES, PriceTable
from klingflow.piapi.waiting import RenderTimes
from klingflow.settings import Settings
from klingflow.workflows.database import is_sqlite, make_engine
from klingflow.workflows.estimate import estimate_run
from klingflow.workflows.executor import (
    NodePaused,
    RunState,
    error_record,
    execute_items,
    execute_run,
)
from klingflow.workflows.failed_tasks import reopen_submitters
from klingflow.workflows.leases import LeasedRequests, LeasedTasks, Leases
from klingflow.workflows.nodes.loop import LoopNode, LoopParams
from klingflow.workflows.nodes.runtime import Services
from klingflow.workflows.reconcile import ONLY_UNCERTAIN, is_settled, settle_uncertain
from klingflow.workflows.runlog import (
    TERMINAL_RUN_STATUSES,
    IntentState,
    NodeStatus,
    RunLog,
    RunRecord,
    RunStatus,
    redact_values,
)
from klingflow.workflows.schema import schema_lock
from klingflow.workflows.spec import Workflow
from klingflow.workflows.workers import Heartbeat, WorkerRegistry

__all__ = ["ENGINE_VERSION", "Engine", "RunQueue", "recover_executor"]

ENGINE_VERSION = "klingflow-engine-1"
"""DBOS application version: change it only with a migration plan for in-flight runs."""

APPLICATION_NAME = "klingflow"
RUNS_QUEUE = "klingflow-runs"
PIAPI_QUEUE = "klingflow-piapi"
CONTROL_TOPIC = "control"
CHUNK_SIZE = 50
PAUSED_WAIT_SECONDS = 24 * 3600.0
RENDER_TIMES_FILE = "render-times.json"
"""In KLINGFLOW_HOME: how long each kind of render took, so the next process's waits look
at the right time from its first task (see piapi.waiting.RenderTimes)."""
START_CHECK_SECONDS = 30.0
"""Longest the checks before a run starts may take (rendering every paid request)."""
ORPHAN_SCAN_LIMIT = 10_000
"""Queued runs checked at launch for a lost enqueue (newest first)."""

_engine: Engine | None = None


def _current() -> Engine:
    if _engine is None:
        raise RuntimeError("no klingflow Engine is running in this process")
    return _engine


# -- durability ------------------------------------------------------------------------------


@DBOS.step(name="klingflow.step")
async def _durable_step(name: str, fn: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    """Run `fn` as a checkpointed step; our errors are recorded as data, not exceptions.

    What it returns is stored by DBOS (`operation_outputs`), so known secrets (the PiAPI key,
    the webhook secret, the chat key, the API token) are masked in it, as in the run log.
    """
    secrets = _current().runlog.secrets
    try:
        return {"ok": redact_values(await fn(), secrets)}
    except KlingflowError as error:
        return {"err": redact_values(error_record(error), secrets), "step": name}


class _WorkflowDurable:
    """Durability at the top level of a run: DBOS steps, durable sleeps and receives."""

    async def step(self, name: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        result = await _durable_step(name, fn)
        if "err" in result:
            raise RecordedError(result["err"])
        return result["ok"]

    async def sleep(self, seconds: float, *, wake_topic: str | None = None) -> None:
        if wake_topic is None:
            await DBOS.sleep_async(seconds)
        else:
            await DBOS.recv_async(wake_topic, timeout_seconds=seconds)


class _InlineDurable:
    """Durability inside a loop chunk: the chunk is one step; the run log's intents and node
    records make each item's work exactly-once when the chunk is run again."""

    def __init__(self, events: AsyncWebhookEvents) -> None:
        self.events = events

    async def step(self, name: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        return await fn()

    async def sleep(self, seconds: float, *, wake_topic: str | None = None) -> None:
        if wake_topic is not None and wake_topic.startswith("task:"):
            await self.events.wait_for(wake_topic.removeprefix("task:"), timeout_seconds=seconds)
        else:
            await asyncio.sleep(seconds)


class _RunSlot:
    """One run's hold on an execution slot (KLINGFLOW_MAX_RUNS), given back while paused;
    `give` is safe to repeat, so a cancellation anywhere leaves the count right."""

    def __init__(self, slots: asyncio.Semaphore) -> None:
        self._slots = slots
        self._held = False

    async def take(self) -> None:
        await self._slots.acquire()
        self._held = True

    def give(self) -> None:
        if self._held:
            self._held = False
            self._slots.release()


# -- the DBOS workflows ----------------------------------------------------------------------


@DBOS.workflow(name="klingflow.run", max_recovery_attempts=50)
async def _run_workflow(run_id: str) -> dict[str, Any]:
    engine = _current()
    with engine.running():
        try:
            # DBOS stores the return value (`workflow_status.output`): secrets masked
            outputs: dict[str, Any] = redact_values(
                await engine._run(run_id), engine.runlog.secrets
            )
            return outputs
        except Exception as error:  # recorded as `crashed` (a bug, not a node failure), raised
            if engine.closing:  # cut off by a shutdown: left pending for the next engine
                raise
            engine.runlog.set_status(
                run_id, RunStatus.CRASHED, message=f"{type(error).__name__}: {error}"
            )
            raise


@DBOS.workflow(name="klingflow.loop_chunk", max_recovery_attempts=50)
async def _chunk_workflow(
    run_id: str,
    epoch: int,
    loop_id: str,
    indices: list[int],
    items: list[Any],
    length: int,
    outer: dict[str, Any],
    concurrency: int,
) -> dict[str, Any]:
    engine = _current()
    with engine.running():
        result = await engine._chunk(
            run_id,
            epoch,
            loop_id,
            dict(zip(indices, items, strict=True)),
            length,
            outer,
            concurrency,
        )
        masked: dict[str, Any] = redact_values(result, engine.runlog.secrets)  # DBOS stores it
        return masked


def recover_executor(executor_id: str) -> int:
    """Hand a dead executor's pending workflows back to their queues; returns how many.

    The one call into DBOS's private API: open-source DBOS has no public way to recover
    another executor's workflows (shared/dbos-notes.md §0). Since 3.4 it re-enqueues them
    on their own queues, and only while they still belong to `executor_id`, so a repeat
    or a second recoverer is harmless. Whether a PiAPI task is submitted again is decided by
    the run log's intents when the workflow replays, not here.
    """
    return len(DBOS._recover_pending_workflows([executor_id]))


# -- the engine ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """What a paused run is told to do."""

    action: str  # retry | skip | restart | cancel
    resubmit: bool = False
    task_id: str | None = None
    """The task of the one uncertain submission (`--task-id ID`)."""
    task_ids: dict[str, str] | None = None
    """The task of each uncertain submission, by node path (`--task-id 'each[3].video=ID'`)."""

    def given_task_ids(self) -> dict[str, str]:
        given = dict(self.task_ids or {})
        if self.task_id:
            given[ONLY_UNCERTAIN] = self.task_id
        return given


class Engine:
    """DBOS launched in this process, with the shared client, run log and queues.

    Use `async with Engine(settings) as engine:` inside the event loop that will run the
    workflows (DBOS binds async workflows to the loop it is launched in).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        client: AsyncPiAPI | None = None,
        wait_policy: WaitPolicy | None = None,
        chunk_size: int = CHUNK_SIZE,
        executor_id: str | None = None,
        execute: bool = True,
        role: str = "engine",
    ) -> None:
        self.settings = settings or Settings()
        self.database_url = self.settings.resolved_database_url()
        self._own_client = client is None
        self.client = client or AsyncPiAPI(
            max_concurrent_tasks=self.settings.concurrency,
            requests_per_minute=self.settings.requests_per_minute,
        )
        self.wait_policy = wait_policy or WaitPolicy(
            initial_interval_seconds=self.settings.poll_seconds
        )
        self.chunk_size = chunk_size
        self.requested_executor_id = executor_id
        self.execute = execute  # False: enqueue and steer runs, never run them (serve --no-execute)
        self.role = role
        self.heartbeat: Heartbeat | None = None
        self.leases: Leases | None = None
        self.events = AsyncWebhookEvents()
        self.poller: StatusPoller | None = None
        self._slot: IO[str] | None = None
        self._semaphores: dict[tuple[str, int, str], asyncio.Semaphore] = {}
        self._run_slots = asyncio.Semaphore(self.settings.max_runs)
        """Runs executing nodes at once in this process (KLINGFLOW_MAX_RUNS); a paused
        run gives its slot back while it waits for a command."""
        self.executor_id = ""
        self.closing = False
        self._workflows: set[asyncio.Task[Any]] = set()
        self._unstoppable: set[asyncio.Task[Any]] = set()
        self.runlog: RunLog

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.launch()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def launch(self) -> None:
        global _engine
        if _engine is not None:
            raise RuntimeError("an Engine is already running in this process")
        if is_sqlite(self.database_url) and sys.version_info >= (3, 12):
            if sqlite3.sqlite_version_info < (3, 42):  # DBOS needs unixepoch('subsec')
                raise RuntimeError(
                    f"SQLite {sqlite3.sqlite_version} is too old for DBOS on Python "
                    f"{sys.version_info.major}.{sys.version_info.minor}: use Python 3.11, "
                    "SQLite >= 3.42, or Postgres (KLINGFLOW_DATABASE_URL)"
                )
        self.settings.home.mkdir(parents=True, exist_ok=True)
        engine = make_engine(
            self.database_url, outage_seconds=self.settings.database_outage_seconds
        )
        with schema_lock(engine):  # processes starting together on an empty database
            await self._launch(engine)

    async def _launch(self, engine: sa.Engine) -> None:
        global _engine
        self.runlog = RunLog(engine, secrets=_secrets(self.settings, self.client.api_key))
        self.executor_id = self.requested_executor_id or self._claim_slot()
        self._adopt_tasks_in_flight()
        for handler in logging.getLogger("dbos").handlers:
            # DBOS keeps the handler it made the first time; follow today's stderr instead.
            # (setStream would flush the old stream, which may be closed by now.)
            if handler.name == "__dbos_console_log_handler__":
                assert isinstance(handler, logging.StreamHandler)
                handler.stream = sys.stderr
        DBOS(
            config={
                "name": APPLICATION_NAME,
                "system_database_url": self.database_url,
                "system_database_engine": engine,
                "serializer": DBOSPortableJSONSerializer(),
                "application_version": ENGINE_VERSION,
                "executor_id": self.executor_id,
                "log_level": "ERROR",  # its warnings (e.g. on shutdown) are not users' business
                "max_executor_threads": 32,
                "notification_listener_polling_interval_sec": 0.1,
            }
        )
        _engine = self
        try:
            self.client.render_times = self._load_render_times()
            self.poller = StatusPoller(self.client, policy=self.wait_policy)
            if not self.execute:
                DBOS.listen_queues([])  # every run and chunk goes through a queue
            DBOS.launch()
            # No queue limit: a paused run is a workflow waiting in `recv`, and the queue
            # would count it against the limit until it ends (20 paused runs froze every
            # later run). The limit is `_run_slots`, held only while a run executes nodes.
            await DBOS.register_queue_async(
                RUNS_QUEUE, global_concurrency=None, polling_interval_sec=0.2
            )
            await DBOS.register_queue_async(
                PIAPI_QUEUE,
                global_concurrency=self.settings.concurrency,
                limiter={"limit": self.settings.requests_per_minute, "period": 60},
                polling_interval_sec=0.2,
            )
            self._recover_abandoned_slots()
            await self._enqueue_orphans()
            if not is_sqlite(self.database_url) and self._own_client:
                self._share_limits(engine)
            self.heartbeat = Heartbeat(
                WorkerRegistry(engine),
                self.executor_id,
                mode=self.role,
                heartbeat_seconds=self.settings.heartbeat_seconds,
                takeover_after_seconds=self.settings.takeover_after_seconds,
                recover=recover_executor if self.execute else None,
                renew=self.leases.renew if self.leases else None,
            )
            await self.heartbeat.start()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        global _engine
        if _engine is self:
            self.closing = True
            if self.heartbeat is not None:
                await self.heartbeat.stop()
            if self.leases is not None:
                await self.leases.drain()
                with contextlib.suppress(Exception):  # else they run out by themselves
                    await asyncio.to_thread(self.leases.release_all)
            await self._stop_workflows()
            DBOS.destroy()
            _engine = None
            if self.poller is not None:
                await self.poller.aclose()
                self.poller = None
                self._save_render_times()
            # DBOS leaves its shut-down pool as the loop's default executor (dbos-notes §1).
            asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor())
            self.runlog.engine.dispose()
        if self._own_client:
            await self.client.aclose()
        if self._slot is not None:
            self._slot.close()
            self._slot = None

    @property
    def _render_times_path(self) -> Path:
        return self.settings.home / RENDER_TIMES_FILE

    def _load_render_times(self) -> RenderTimes:
        """What earlier processes of this home learned about render times (none: defaults)."""
        try:
            data = json.loads(self._render_times_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return RenderTimes()
        return RenderTimes.from_json(data)

    def _save_render_times(self) -> None:
        """Keep what this process learned for the next one (atomically; best effort)."""
        path = self._render_times_path
        part = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            part.write_text(json.dumps(self.client.render_times.to_json()), encoding="utf-8")
            part.replace(path)
        except OSError as error:
            logging.getLogger(__name__).warning("could not save %s: %s", path, error)
            part.unlink(missing_ok=True)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Track the workflow executing in the current task, for `_stop_workflows`."""
        task = asyncio.current_task()
        assert task is not None
        self._workflows.add(task)
        try:
            yield
        finally:
            self._workflows.discard(task)

    async def _stop_workflows(self) -> None:
        """Stop this process's workflows at their next await (DBOS keeps them pending for
        the next engine), but let create requests already sent get their answer recorded."""
        for task in self._workflows:
            task.cancel()
        await asyncio.gather(*self._workflows, *self._unstoppable, return_exceptions=True)

    def _adopt_tasks_in_flight(self) -> None:
        """Count the tasks PiAPI may still run for unfinished runs (a dead process's) toward
        this client's concurrency limit, until it sees each one finished. Before DBOS
        recovers anything, so no recovered run submits past the limit. With several
        workers each also counts the others' tasks: it waits longer, never exceeds."""
        in_flight = self.runlog.submissions(active_only=True, limit=ORPHAN_SCAN_LIMIT)
        self.client.adopt_tasks(
            s.intent.task_id
            for s in reversed(in_flight)  # oldest first, as the client keeps them
            if s.intent.state is IntentState.ACCEPTED and s.intent.task_id
        )

    def _share_limits(self, engine: sa.Engine) -> None:
        """On Postgres, the account's limits are held by all workers together (leases.py)."""
        self.leases = Leases(engine, self.executor_id, lease_seconds=self.settings.lease_seconds)
        self.client.share_limits(
            throttle=LeasedRequests(self.leases, self.settings.requests_per_minute),
            slots=LeasedTasks(self.leases, self.settings.concurrency),
        )

    def _slot_prefix(self) -> str:
        return "local" if is_sqlite(self.database_url) else f"{socket.gethostname()}-local"

    def _claim_slot(self) -> str:
        """A unique, stable executor id: the first free local slot (lock file in home)."""
        for number in range(64):
            handle = (self.settings.home / f"executor-{number}.lock").open("a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            self._slot = handle
            return self._slot_prefix() if number == 0 else f"{self._slot_prefix()}-{number}"
        raise RuntimeError("64 klingflow processes already share this home folder")

    def _recover_abandoned_slots(self) -> None:
        """Take over the runs of local slots whose process died (their lock is free)."""
        if self.requested_executor_id:
            return
        for number in range(64):
            executor_id = self._slot_prefix() if number == 0 else f"{self._slot_prefix()}-{number}"
            if executor_id == self.executor_id:
                continue
            path = self.settings.home / f"executor-{number}.lock"
            if not path.exists():
                continue
            with path.open("a") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # alive
                recover_executor(executor_id)
                fcntl.flock(handle, fcntl.LOCK_UN)

    def services(self) -> Services:
        base_url = str(self.client.base_url)
        return Services(
            client=self.client,
            runlog=self.runlog,
            wait_policy=self.wait_policy,
            events=self.events,
            chat_base_url=self.settings.chat_base_url or base_url,
            chat_api_key=(
                self.settings.chat_api_key.get_secret_value()
                if self.settings.chat_api_key
                else None
            ),
            piapi_api_key=self.client.api_key.get_secret_value(),
            webhook_url=self.settings.public_url and f"{self.settings.public_url}/hooks/piapi",
            webhook_secret=(
                self.settings.webhook_secret.get_secret_value()
                if self.settings.webhook_secret
                else None
            ),
            private_hosts=self.settings.private_hosts,
            unstoppable=self._unstoppable,
            poller=self.poller,
        )

    def receive_webhooks(self) -> None:
        """This process hosts the webhook receiver (`klingflow serve` with a public URL and a
        secret): PiAPI reports each task's end here, so waits look only as a safety net.
        A worker sharing the database polls on its own schedule instead."""
        if self.poller is not None:
            self.poller.has_webhook = True

    # -- starting and steering runs ----------------------------------------------------------

    async def start_run(
        self,
        workflow: Workflow,
        payload: dict[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> RunRecord:
        """Create the run and queue it, its inputs checked first; a known idempotency key
        returns the key's run, whatever this payload says (a retried call gets its answer).

        The checks are the estimate's: the inputs, and every paid node's request as these
        inputs render it. A payload that cannot make a valid Kling request raises here
        (`WorkflowInputError`, `InvalidRequestError`) instead of starting a run that would
        pause on it; every entry point (CLI, API, hooks, forms, schedules) starts here.
        """
        run, created = await _create_run(
            self.runlog,
            self.settings,
            workflow,
            payload,
            idempotency_key=idempotency_key,
            prices=self.client.prices,
        )
        if created:
            await self._enqueue(run.run_id)
        elif run.status is RunStatus.QUEUED:
            await self._enqueue_orphan(run.run_id)
        return run

    async def _enqueue(self, run_id: str) -> None:
        queue = await DBOS.retrieve_queue_async(RUNS_QUEUE)
        assert queue is not None
        with SetWorkflowID(run_id):
            await queue.enqueue_async(_run_workflow, run_id)

    async def _enqueue_orphan(self, run_id: str) -> None:
        """Enqueue a queued run DBOS never received: its process died between writing the
        run and enqueueing it. A run DBOS knows is left alone."""
        if await DBOS.get_workflow_status_async(run_id) is None:
            await self._enqueue(run_id)

    async def _enqueue_orphans(self) -> None:
        for run in self.runlog.list_runs(status=RunStatus.QUEUED, limit=ORPHAN_SCAN_LIMIT):
            await self._enqueue_orphan(run.run_id)

    async def wait(
        self,
        run_ids: Sequence[str],
        *,
        poll_seconds: float = 0.2,
        timeout_seconds: float | None = None,
        on_poll: Callable[[list[RunRecord]], None] | None = None,
    ) -> list[RunRecord]:
        """Until every run is finished or paused; `on_poll` sees each look."""
        deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
        while True:
            runs = [self.runlog.get_run(run_id) for run_id in run_ids]
            records = [run for run in runs if run is not None]
            if on_poll is not None:
                on_poll(records)
            settled = TERMINAL_RUN_STATUSES | {RunStatus.PAUSED}
            if all(run.status in settled for run in records):
                await self._workflows_stored(r.run_id for r in records if r.status == "completed")
                return records
            if deadline is not None and time.monotonic() > deadline:
                return records
            await asyncio.sleep(poll_seconds)

    async def busy_runs(self, *, exclude: Iterable[str] = ()) -> list[str]:
        """Queued or running runs that this process executes: DBOS hands a queued run to any
        engine, so a short-lived one (`klingflow run`) may hold others' runs when it is done."""
        mine = await DBOS.list_workflows_async(
            status="PENDING",
            name="klingflow.run",
            executor_id=self.executor_id,
            load_input=False,
            load_output=False,
        )
        skip = set(exclude)
        busy = {RunStatus.QUEUED, RunStatus.RUNNING}
        runs = (self.runlog.get_run(w.workflow_id) for w in mine if w.workflow_id not in skip)
        return [run.run_id for run in runs if run is not None and run.status in busy]

    async def _workflows_stored(self, run_ids: Iterable[str]) -> None:
        """The run log says `completed` a moment before DBOS stores the workflow's end; wait
        for that too, so closing the engine right after never leaves the run to replay."""
        for run_id in run_ids:
            handle: WorkflowHandleAsync[Any] = await DBOS.retrieve_workflow_async(run_id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(handle.get_result(polling_interval_sec=0.02), 5)

    async def command(self, run_id: str, command: Command) -> RunRecord:
        """Tell a paused run what to do; `cancel` also stops a queued or running one."""
        run = self.runlog.get_run(run_id)
        if run is None:
            raise RunNotFoundError(run_id, where=str(self.runlog.engine.url))  # password masked
        run = await self._crash_not_written(run)
        status = run.status.value
        if command.action == "cancel":
            if run.status in TERMINAL_RUN_STATUSES:
                raise RunStateError(
                    f"run {run_id} is already {status}", run_id=run_id, status=status
                )
            await DBOS.cancel_workflow_async(run_id, cancel_children=True)
            self.runlog.set_status(run_id, RunStatus.CANCELLED, message="cancelled by the user")
        elif self.runlog.claim_paused(run_id, message=f"{command.action} requested"):
            await DBOS.send_async(run_id, command.__dict__, topic=CONTROL_TOPIC)
        elif (
            command.action in ("retry", "restart")
            and run.status is RunStatus.CRASHED
            and await self._no_live_chunks(run_id)
            and self.runlog.claim_crashed(
                run_id, message=f"{command.action} of a crashed run requested"
            )
        ):
            # DBOS ended the workflow in error; run it again from its first step, in place.
            # Finished nodes come back from the run log and paid submissions from their
            # intents, so this is a resume, not a rerun (`restart` opens a new epoch first).
            if command.action == "restart":
                self.runlog.new_epoch(run_id)
            await DBOS.rewind_workflow_async(run_id, start_step=1, queue_name=RUNS_QUEUE)
        else:  # not paused, or another command (another click, another process) came first
            now = self.runlog.get_run(run_id)
            status = now.status.value if now is not None else status
            raise RunStateError(
                f"run {run_id} is {status}, not paused: there is nothing to {command.action}",
                run_id=run_id,
                status=status,
            )
        record = self.runlog.get_run(run_id)
        assert record is not None
        return record

    async def _crash_not_written(self, run: RunRecord) -> RunRecord:
        """A run the log says is running whose workflow DBOS ended in error crashed while
        the database could not take even that (an outage longer than the window)."""
        if run.status is not RunStatus.RUNNING:
            return run
        workflow = await DBOS.get_workflow_status_async(run.run_id)
        if workflow is None or workflow.status != "ERROR":
            return run
        message = f"crashed: {workflow.error}" if workflow.error else "crashed"
        self.runlog.set_status(run.run_id, RunStatus.CRASHED, message=message)
        crashed = self.runlog.get_run(run.run_id)
        assert crashed is not None
        return crashed

    async def _no_live_chunks(self, run_id: str) -> bool:
        """A crashed run's loop chunks may still be working (the run's own workflow died,
        not theirs): running the run again beside them could submit an item twice."""
        live = await DBOS.list_workflows_async(
            parent_workflow_id=run_id,
            status=["PENDING", "ENQUEUED"],
            load_input=False,
            load_output=False,
        )
        if live:
            raise RunStateError(
                f"run {run_id} crashed while {len(live)} of its loop chunks still run; retry "
                "once they have finished (a worker finishes them)",
                run_id=run_id,
                status=RunStatus.CRASHED.value,
            )
        return True

    async def deliver_webhook(self, task: Task, *, intent_id: str | None = None) -> None:
        """A verified, confirmed webhook: settle a lost answer, and settle the cost of a
        completed task. (Whatever waits for the task was woken by the confirming GET.)

        `intent_id` comes from the webhook URL klingflow gave PiAPI. When that submission is
        uncertain (its answer was lost), the webhook proves which task it created: the run
        records the task id and, if it paused over it, resumes without paying again.
        """
        self.events.put(task)
        if intent_id is not None and (found := self.runlog.intent_by_id(intent_id)):
            run_id, intent = found
            # SENT: the answer may still be on its way, or lost; either way this is the task.
            if intent.state in (IntentState.SENT, IntentState.UNCERTAIN) and not intent.task_id:
                self.runlog.update_intent(
                    intent_id,
                    IntentState.ACCEPTED,
                    task_id=task.task_id,
                    note="reconciled by PiAPI's webhook",
                )
                await self.resume_if_settled(run_id)
            elif intent.state is IntentState.ABANDONED and task.is_terminal:
                # Resubmitted over, yet PiAPI made it: what it cost is known now.
                spent = task.meta.usage.consume
                self.runlog.settle_abandoned(intent_id, task_id=task.task_id, spent_points=spent)
        owner = self.runlog.intent_for_task(task.task_id)
        if owner is None:
            return
        if task.status == "completed":
            # Settles what it cost even when no node waits for the task (a lone
            # `kling.generate_video`); a waiting node's own settle then finds it done. A
            # failed task is left to its node, whose retry policy decides what comes next.
            spent = task.meta.usage.consume
            self.runlog.finish_intent(task.task_id, IntentState.COMPLETED, spent_points=spent)
        # The waiting node needs no message: the confirming GET that produced `task` went
        # through `self.client`, whose status poller ended that node's wait as it arrived.

    async def resume_if_settled(self, run_id: str) -> bool:
        """Retry a run paused only over uncertain submissions once none is left uncertain.

        Called after a webhook settles one. A run that pauses just after this looked (the
        webhook came while the loop still ran) checks the same itself once it has paused,
        so one of the two always sees the other's write; `claim_paused` lets only one act.
        """
        run = self.runlog.get_run(run_id)
        if run is None or run.status != RunStatus.PAUSED or run.paused_node is None:
            return False
        if not is_settled(self.runlog, run_id, run.epoch, run.paused_node, self._error_of(run)):
            return False
        try:
            await self.command(run_id, Command(action="retry"))
        except RunStateError:  # another process, or the run itself, came first
            return False
        return True

    def _error_of(self, run: RunRecord) -> Any:
        node = next(
            (n for n in self.runlog.nodes(run.run_id, run.epoch) if n.node_path == run.paused_node),
            None,
        )
        return None if node is None else node.error

    def _settled_at_pause(
        self, run_id: str, epoch: int, paused: NodePaused
    ) -> Callable[[], Awaitable[bool]]:
        """Claim the run for a retry when webhooks settled its uncertain submissions before
        it paused (see `resume_if_settled`)."""

        async def check() -> bool:
            runlog = self.runlog
            return is_settled(
                runlog, run_id, epoch, paused.node_path, paused.error
            ) and runlog.claim_paused(run_id, message="settled by PiAPI's webhook")

        return check

    # -- inside the workflows ----------------------------------------------------------------

    async def _run(self, run_id: str) -> dict[str, Any]:
        durable = _WorkflowDurable()
        runlog = self.runlog

        async def load_epoch() -> int:
            run = runlog.get_run(run_id)
            assert run is not None, f"run {run_id} is not in the run log"
            return run.epoch

        epoch: int = await durable.step("run.epoch", load_epoch)
        run = runlog.get_run(run_id)
        assert run is not None
        workflow = Workflow.model_validate(run.workflow)

        def status(value: RunStatus, **fields: Any) -> Callable[[], Awaitable[None]]:
            async def write() -> None:
                runlog.set_status(run_id, value, **fields)

            return write

        # Status writes are steps: a replay after a crash must not flip them back.
        slot = _RunSlot(self._run_slots)
        await slot.take()  # until a slot is free, the run stays `queued`
        try:
            await durable.step("run.status", status(RunStatus.RUNNING))
            return await self._execute(run_id, run, epoch, workflow, durable, status, slot)
        finally:
            slot.give()

    async def _execute(
        self,
        run_id: str,
        run: RunRecord,
        epoch: int,
        workflow: Workflow,
        durable: _WorkflowDurable,
        status: Callable[..., Callable[[], Awaitable[None]]],
        slot: _RunSlot,
    ) -> dict[str, Any]:
        """The run's nodes, and its pauses: the caller holds a run slot, given back while
        the run waits for a command."""
        while True:
            state = RunState(run, epoch, workflow, self.services(), durable)
            try:
                outputs = await execute_run(state, loop_runner=self._loop)
            except NodePaused as paused:
                message, node = paused.error["message"], paused.node_path
                while True:  # until a command the run can act on
                    await durable.step(
                        "run.status", status(RunStatus.PAUSED, message=message, paused_node=node)
                    )
                    settled = await durable.step(
                        "run.settled", self._settled_at_pause(run_id, epoch, paused)
                    )
                    if settled:
                        command = Command(action="retry")
                    else:
                        slot.give()  # a paused run holds no slot
                        command = await self._next_command()
                        await slot.take()
                    if command.action == "cancel":
                        message = "cancelled while paused"
                        await durable.step(
                            "run.status", status(RunStatus.CANCELLED, message=message)
                        )
                        return {"cancelled": True}
                    if command.action == "skip" and node == "outputs":
                        await durable.step("run.status", status(RunStatus.COMPLETED, outputs={}))
                        return {}
                    if command.action == "restart":
                        epoch = await durable.step("run.restart", self._new_epoch(run_id))
                        break
                    refusal: str | None = await durable.step(
                        f"run.{command.action}", self._resolve(run_id, epoch, paused, command)
                    )
                    if refusal is None:
                        break
                    message = refusal
                await durable.step("run.status", status(RunStatus.RUNNING))
                continue
            await durable.step("run.status", status(RunStatus.COMPLETED, outputs=outputs))
            return outputs

    async def _next_command(self) -> Command:
        while True:
            message = await DBOS.recv_async(CONTROL_TOPIC, timeout_seconds=PAUSED_WAIT_SECONDS)
            if isinstance(message, dict) and message.get("action"):
                return Command(**message)

    def _new_epoch(self, run_id: str) -> Callable[[], Awaitable[int]]:
        async def bump() -> int:
            return self.runlog.new_epoch(run_id)

        return bump

    def _resolve(
        self, run_id: str, epoch: int, paused: NodePaused, command: Command
    ) -> Callable[[], Awaitable[str | None]]:
        """Apply retry's or skip's decisions to the run log; a refusal says why not."""

        async def apply() -> str | None:
            runlog = self.runlog
            prefix = paused.node_path
            uncertain = [
                intent
                for intent in runlog.intents(run_id, epoch=epoch)
                if intent.state == IntentState.UNCERTAIN
                and (intent.node_path == prefix or intent.node_path.startswith(prefix + "["))
            ]
            if given := command.given_task_ids():
                refusal = await settle_uncertain(runlog, self.client, uncertain, given)
                if refusal is not None:
                    return refusal
            elif command.resubmit:
                for intent in uncertain:
                    runlog.abandon_intent(intent.intent_id, note="user chose to resubmit")
            if command.action == "retry":  # a failed task is retried as a new task
                reopen_submitters(runlog, run_id, epoch, prefix)
            if command.action == "skip":
                partial = paused.error.get("partial_output")
                runlog.node_finished(
                    run_id, epoch, prefix, status=NodeStatus.SKIPPED, output=partial
                )
            return None

        return apply

    async def _loop(
        self,
        run: RunRecord,
        epoch: int,
        loop: LoopNode,
        params: LoopParams,
        context: dict[str, Any],
    ) -> list[Any]:
        """Fan the items out over the PiAPI queue in chunks; outputs come back in item order."""
        durable = _WorkflowDurable()

        async def new_generation() -> str:
            return uuid.uuid4().hex[:8]

        generation: str = await durable.step("loop.generation", new_generation)
        items = params.items
        outer = {node_id: value["output"] for node_id, value in context["nodes"].items()}
        queue = await DBOS.retrieve_queue_async(PIAPI_QUEUE)
        assert queue is not None
        handles = []
        for start in range(0, len(items), self.chunk_size):
            indices = list(range(start, min(start + self.chunk_size, len(items))))
            with SetWorkflowID(f"{run.run_id}.{loop.id}.{generation}.{start}"):
                handles.append(
                    await queue.enqueue_async(
                        _chunk_workflow,
                        run.run_id,
                        epoch,
                        loop.id,
                        indices,
                        # DBOS stores a workflow's arguments: known secrets masked
                        redact_values([items[i] for i in indices], self.runlog.secrets),
                        len(items),
                        redact_values(outer, self.runlog.secrets),
                        params.concurrency,
                    )
                )
        outputs: dict[str, Any] = {}
        failed: dict[str, Any] = {}
        for handle in handles:
            result = await handle.get_result(polling_interval_sec=0.1)
            outputs.update(result["outputs"])
            failed.update(result["failed"])
        self._semaphores.pop((run.run_id, epoch, loop.id), None)
        ordered = [outputs.get(str(index)) for index in range(len(items))]
        if failed:
            raise LoopItemsFailedError(
                loop.id, failed={int(k): v for k, v in failed.items()}, total=len(items),
                partial_output=ordered,
            )  # fmt: skip
        return ordered

    async def _chunk(
        self,
        run_id: str,
        epoch: int,
        loop_id: str,
        items: dict[int, Any],
        length: int,
        outer: dict[str, Any],
        concurrency: int,
    ) -> dict[str, Any]:
        run = self.runlog.get_run(run_id)
        assert run is not None
        workflow = Workflow.model_validate(run.workflow)
        loop = workflow.node(loop_id)
        assert isinstance(loop, LoopNode)
        key = (run_id, epoch, loop_id)
        semaphore = self._semaphores.setdefault(key, asyncio.Semaphore(concurrency))
        state = RunState(run, epoch, workflow, self.services(), _InlineDurable(self.events))

        async def run_items() -> dict[str, Any]:
            return await execute_items(state, loop, items, length, outer, semaphore)

        result: dict[str, Any] = (await _durable_step("loop.items", run_items))["ok"]
        return result


def _secrets(settings: Settings, api_key: SecretStr | None) -> tuple[str, ...]:
    """The values the run log masks wherever they appear (in a trigger, a message)."""
    return tuple(
        secret.get_secret_value()
        for secret in (api_key, settings.chat_api_key, settings.webhook_secret, settings.api_token)
        if secret is not None
    )


async def _create_run(
    runlog: RunLog,
    settings: Settings,
    workflow: Workflow,
    payload: dict[str, Any],
    *,
    idempotency_key: str | None,
    prices: PriceTable,
) -> tuple[RunRecord, bool]:
    """The key's run, or a new queued one (inputs and paid requests checked first)."""
    known = None if idempotency_key is None else runlog.find_by_key(idempotency_key)
    if known is not None:
        return known, False
    # The estimate's checks, off the event loop (a large loop renders every item) and within
    # START_CHECK_SECONDS; each template render has its own limits as well.
    check = asyncio.to_thread(estimate_run, workflow, payload, prices=prices)
    try:
        await asyncio.wait_for(check, timeout=START_CHECK_SECONDS)
    except TimeoutError:
        raise InvalidRequestError(
            [("payload", f"checking the run took over {START_CHECK_SECONDS:g} s: "
              "simplify its templates or split the batch")]
        ) from None  # fmt: skip
    return runlog.create_run(
        workflow_name=workflow.name,
        workflow_hash=workflow.content_hash,
        workflow=workflow.model_dump(mode="json", by_alias=True, exclude_unset=True),
        source_path=workflow.source_path,
        trigger=payload,
        inputs=workflow.resolve_inputs(payload),
        output_root=str(settings.outputs_dir),
        budget_usd=workflow.budget_usd,
        idempotency_key=idempotency_key,
    )


class RunQueue:
    """Queues runs without executing any: `klingflow run --detach`.

    An `Engine` executes whatever DBOS hands it, so a short-lived one would take queued
    runs and abandon them when it exits (under its own executor id, which no worker
    recovers). This writes the run and enqueues its workflow through a `DBOSClient`: only
    workers and `serve` execute. Use `async with RunQueue(settings) as queue:`.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.runlog: RunLog
        self._client: DBOSClient | None = None

    async def __aenter__(self) -> Self:
        url = self.settings.resolved_database_url()
        self.settings.home.mkdir(parents=True, exist_ok=True)
        engine = make_engine(url, outage_seconds=self.settings.database_outage_seconds)
        api_key = os.environ.get("PIAPI_API_KEY")
        secret = SecretStr(api_key) if api_key else None
        self.runlog = RunLog(engine, secrets=_secrets(self.settings, secret))
        # The client never creates DBOS's tables; a first `--detach` on a new database must.
        await asyncio.to_thread(DBOS.migrate, url)
        self._client = DBOSClient(
            system_database_engine=engine,
            serializer=DBOSPortableJSONSerializer(),
            application_name=APPLICATION_NAME,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._client is not None:
            self._client.destroy()
        self.runlog.engine.dispose()

    async def start_run(
        self,
        workflow: Workflow,
        payload: dict[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> RunRecord:
        """Like `Engine.start_run`, but only queued. Enqueueing a known run's id again
        attaches to it (DBOS's default), so a lost enqueue is repaired and nothing repeats."""
        assert self._client is not None, "use `async with RunQueue(...)`"
        run, created = await _create_run(
            self.runlog,
            self.settings,
            workflow,
            payload,
            idempotency_key=idempotency_key,
            prices=DEFAULT_PRICES,
        )
        if created or run.status is RunStatus.QUEUED:
            options: EnqueueOptions = {
                "queue_name": RUNS_QUEUE,
                "workflow_name": "klingflow.run",
                "workflow_id": run.run_id,
                "app_version": ENGINE_VERSION,
            }
            await self._client.enqueue_async(options, run.run_id)
        return run


def describe_paused(run: RunRecord) -> str:
    """One line for a paused run: where and why, and what to type next."""
    return (
        f"run {run.run_id} paused on {run.paused_node}: {run.message}. "
        f"Retry with `klingflow runs retry {run.run_id}` (or skip / cancel)."
    )
