"""`Engine`: DBOS launched in this process, with the shared client, run log and queues."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Self

import sqlalchemy as sa
from dbos import DBOS, DBOSPortableJSONSerializer, SetWorkflowID, WorkflowHandleAsync

from klingflow.errors import RunLogWriteError, RunNotFoundError, RunStateError
from klingflow.piapi import AsyncPiAPI, AsyncWebhookEvents, Task, WaitPolicy
from klingflow.piapi.polling import StatusPoller
from klingflow.piapi.pricing import PriceTable
from klingflow.settings import Settings
from klingflow.workflows.database import is_sqlite, make_engine
from klingflow.workflows.engine._durable import (
    APPLICATION_NAME,
    CONTROL_TOPIC,
    ENGINE_VERSION,
    RUNS_QUEUE,
    WorkflowDurable,
    bind,
    destroy_dbos,
    next_command,
    recover_executor,
    run_workflow,
    running_engine,
    stop_if_refused,
)
from klingflow.workflows.engine._fanout import CHUNK_SIZE, fan_out
from klingflow.workflows.engine._queue import create_queues, queue_options
from klingflow.workflows.executor_slots import ExecutorSlot, recover_abandoned_slots, slot_prefix
from klingflow.workflows.leases import LeasedRequests, LeasedTasks, Leases
from klingflow.workflows.lifecycle import RunLife
from klingflow.workflows.nodes.egress import check_connections
from klingflow.workflows.nodes.runtime import Services
from klingflow.workflows.records import TERMINAL_RUN_STATUSES, IntentState, RunRecord, RunStatus
from klingflow.workflows.render_times import load_render_times, save_render_times
from klingflow.workflows.rescued_tasks import RescuedTasks
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.schema import schema_lock
from klingflow.workflows.starting import RunStarter, known_secrets
from klingflow.workflows.steering import (
    Action,
    Command,
    CommandRoute,
    bind_webhook_task,
    is_settled_pause,
    route_command,
    settle_webhook_cost,
)
from klingflow.workflows.workers import Heartbeat, WorkerRegistry

__all__ = ["Engine"]

ORPHAN_SCAN_LIMIT = 10_000
"""Queued runs checked at launch for a lost enqueue (newest first)."""


class Engine(RunStarter):
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
        if self._own_client:
            check_connections(self.client)  # a download connects only where it was checked
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
        self._slot: ExecutorSlot | None = None
        self._semaphores: dict[tuple[str, int, str], asyncio.Semaphore] = {}
        self._run_slots = asyncio.Semaphore(self.settings.max_runs)
        """Runs executing nodes at once in this process (KLINGFLOW_MAX_RUNS); a paused
        run gives its slot back while it waits for a command."""
        self.executor_id = ""
        self.is_closing = False
        """Set once `aclose` begins: a workflow cut off by the shutdown is left pending for
        the next engine, not recorded as crashed."""
        self.write_failure: sa.exc.OperationalError | None = None
        """The database error that stopped one of this process's workflows, if any."""
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
        """Launch DBOS in this process (one engine per process), with its queues, then
        recover what died with earlier processes; `__aenter__` calls it."""
        if running_engine() is not None:
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
        self.runlog = RunLog(engine, secrets=known_secrets(self.settings, self.client.api_key))
        database = engine.url.database
        if self.execute and is_sqlite(self.database_url) and database not in (None, ":memory:"):
            self.runlog.rescued = RescuedTasks(Path(database))
            self.runlog.rescued.reserve()
        self.sealing_key = self.client.api_key
        if self.requested_executor_id:
            self.executor_id = self.requested_executor_id
        else:
            self._slot = ExecutorSlot.claim(self.settings.home, slot_prefix(self.database_url))
            self.executor_id = self._slot.executor_id
        if not is_sqlite(self.database_url) and self._own_client:
            # Before DBOS launches: a run it starts at once takes slots from these limiters.
            self._share_limits(engine)
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
        bind(self)
        try:
            self.client.render_times = load_render_times(self.settings.home)
            self.poller = StatusPoller(self.client, policy=self.wait_policy)
            queues = queue_options(self.settings)
            if self.execute:  # polled from launch on, not from the queue manager's rescan
                await asyncio.to_thread(create_queues, self.database_url, engine, queues)
            else:
                DBOS.listen_queues([])  # every run and chunk goes through a queue
            DBOS.launch()
            for name, options in queues.items():
                await DBOS.register_queue_async(name, **options)
            self._recover_abandoned_slots()
            await self._enqueue_orphans()
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
        """Stop this process's workflows (DBOS keeps them pending for the next engine),
        give back leases and the executor slot, and close what the engine opened."""
        if running_engine() is self:
            self.is_closing = True
            if self.heartbeat is not None:
                await self.heartbeat.stop()
            await self._stop_workflows()
            if self.leases is not None:  # after the workflows: none takes a slot any more
                await self.leases.drain()
                with contextlib.suppress(Exception):  # else they run out by themselves
                    await asyncio.to_thread(self.leases.release_all)
            await destroy_dbos()
            bind(None)
            if self.poller is not None:
                await self.poller.aclose()
                self.poller = None
                save_render_times(self.settings.home, self.client.render_times)
            await self.runlog.group.idle()  # writes of stopped workflows still committing
            self.runlog.engine.dispose()
        if self._own_client:
            await self.client.aclose()
        if self._slot is not None:
            self._slot.close()
            self._slot = None

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Track the workflow executing in the current task, for `_stop_workflows`."""
        if self.is_closing:  # handed over by DBOS while this engine stops: left pending
            raise asyncio.CancelledError
        task = asyncio.current_task()
        assert task is not None
        self._workflows.add(task)
        try:
            yield
        except Exception as error:
            stop_if_refused(error)
            raise
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
        self.leases = Leases(
            engine,
            self.executor_id,
            lease_seconds=self.settings.lease_seconds,
            group=self.runlog.group,  # a take or give-back commits with the run log's writes
        )
        self.client.share_limits(
            throttle=LeasedRequests(self.leases, self.settings.requests_per_minute),
            slots=LeasedTasks(self.leases, self.settings.concurrency),
        )

    def _recover_abandoned_slots(self) -> None:
        """Take over the runs of local slots whose process died (executor_slots.py)."""
        if self.requested_executor_id:
            return
        recover_abandoned_slots(
            self.settings.home,
            slot_prefix(self.database_url),
            own_id=self.executor_id,
            recover=recover_executor,
        )

    def services(self) -> Services:
        """What every node runs with: this process's client, run log and settings."""
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

    @property
    def prices(self) -> PriceTable:
        """The client's prices: a run's budget is checked against what this client pays."""
        return self.client.prices

    async def _enqueue(self, run_id: str, *, is_new: bool) -> None:
        """Queue a new run; a known queued run only when DBOS never received it (its process
        died between writing the run and enqueueing it). A run DBOS knows is left alone."""
        if not is_new and await DBOS.get_workflow_status_async(run_id) is not None:
            return
        queue = await DBOS.retrieve_queue_async(RUNS_QUEUE)
        assert queue is not None
        with SetWorkflowID(run_id):
            await queue.enqueue_async(run_workflow, run_id)

    async def _enqueue_orphans(self) -> None:
        """At launch: queue the queued runs whose enqueue was lost (see `_enqueue`)."""
        for run in self.runlog.list_runs(status=RunStatus.QUEUED, limit=ORPHAN_SCAN_LIMIT):
            await self._enqueue(run.run_id, is_new=False)

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
        settled = TERMINAL_RUN_STATUSES | {RunStatus.PAUSED}
        while True:
            in_time = deadline is None or time.monotonic() <= deadline
            quick = on_poll is None and self.write_failure is None and in_time
            # A look at the statuses alone while unsettled: a run's record holds its trigger.
            if quick and not all(s in settled for s in self.runlog.run_statuses(run_ids).values()):
                await asyncio.sleep(poll_seconds)
                continue
            records = [run for run in map(self.runlog.get_run, run_ids) if run is not None]
            if on_poll is not None:
                on_poll(records)
            if all(run.status in settled for run in records):
                await self._workflows_stored(r.run_id for r in records if r.status == "completed")
                return records
            if self.write_failure is not None:  # a run that could not record its end
                reason = str(self.write_failure.orig).strip() or type(self.write_failure).__name__
                raise RunLogWriteError(reason) from self.write_failure
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
        """Tell a paused run what to do; `cancel` also stops a queued or running one.

        Where the command goes is steering's decision (`route_command`); this carries it
        out through DBOS. Raises `RunNotFoundError`, or `RunStateError` when the run's
        status does not allow the command (nothing is changed then).
        """
        run = self.runlog.get_run(run_id)
        if run is None:
            raise RunNotFoundError(run_id, where=str(self.runlog.engine.url))  # password masked
        run = await self._crash_not_written(run)
        route = await route_command(
            self.runlog, run, command, live_chunks=lambda: self._live_chunks(run_id)
        )
        if route is CommandRoute.CANCEL_WORKFLOW:
            await DBOS.cancel_workflow_async(run_id, cancel_children=True)
            self.runlog.set_status(run_id, RunStatus.CANCELLED, message="cancelled by the user")
        elif route is CommandRoute.SEND_TO_PAUSED:
            await DBOS.send_async(run_id, command.to_message(), topic=CONTROL_TOPIC)
        else:  # DBOS ended the workflow in error: run it again from its first step, in place
            await DBOS.rewind_workflow_async(run_id, start_step=1, queue_name=RUNS_QUEUE)
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

    async def _live_chunks(self, run_id: str) -> int:
        """How many of a run's loop chunks DBOS still runs or has queued (the run's own
        workflow may have died, not theirs)."""
        live = await DBOS.list_workflows_async(
            parent_workflow_id=run_id,
            status=["PENDING", "ENQUEUED"],
            load_input=False,
            load_output=False,
        )
        return len(live)

    async def deliver_webhook(self, task: Task, *, intent_id: str | None = None) -> None:
        """A verified, confirmed webhook: settle a lost answer, and settle the cost of a
        completed task. (Whatever waits for the task was woken by the confirming GET.)

        `intent_id` comes from the webhook URL klingflow gave PiAPI. When that submission is
        uncertain (its answer was lost), the webhook proves which task it created: the run
        records the task id and, if it paused over it, resumes without paying again.
        """
        self.events.put(task)
        # In a thread on Postgres: on the event loop their round trips held up every node.
        bind = bind_webhook_task
        run_id = await self.runlog.group.call(bind, self.runlog, task, intent_id=intent_id)
        if run_id is not None:
            await self.resume_if_settled(run_id)
        await settle_webhook_cost(self.runlog, task)
        # The waiting node needs no message: the confirming GET that produced `task` went
        # through `self.client`, whose status poller ended that node's wait as it arrived.

    async def resume_if_settled(self, run_id: str) -> bool:
        """Retry a run paused only over uncertain submissions once none is left uncertain
        (`is_settled_pause`); False when it is not such a run, or another came first."""
        if not is_settled_pause(self.runlog, run_id):
            return False
        try:
            await self.command(run_id, Command(action=Action.RETRY))
        except RunStateError:  # another process, or the run itself, came first
            return False
        return True

    # -- inside the workflows ----------------------------------------------------------------

    async def _run(self, run_id: str) -> dict[str, Any]:
        """The body of the `klingflow.run` workflow (lifecycle.py), with DBOS durability."""
        life = RunLife(
            run_id,
            runlog=self.runlog,
            client=self.client,
            services=self.services,
            durable=WorkflowDurable(),
            run_slots=self._run_slots,
            loop_runner=functools.partial(fan_out, self),
            next_command=next_command,
        )
        return await life.live()
