"""Cron schedules of published workflows: one run per tick, however many processes fire it.

```python
async with Engine(settings) as engine, Scheduler(engine, WorkflowRegistry(engine.runlog.engine)):
    ...  # the scheduler fires in a background task until the block exits
```

Every process that runs a `Scheduler` (`klingflow serve`, `klingflow worker`) reads the latest
published version of each workflow and starts a run for every tick of its `schedules:`. The
processes do not talk to each other: a tick's run has the idempotency key
`schedule:<workflow>:<schedule key>:<tick in UTC>`, which is unique in the run log, so the
first process to start it creates the run and every other one finds it
(`RunLog.create_run`). A tick costs one run whether one process fires it or ten.

The schedule key is its `name`, else a hash of its cron, timezone and payload
(`ScheduleSpec.key`), so it is the same in every version that has the schedule, wherever it
sits in the list. A version fires only ticks after it was published, and just before
starting a tick's run a process checks that the version it read is still the latest. What
is left: when a version renames a schedule or changes its payload, a tick falling due while
that publish commits (or within the publishing machine's clock lag behind the firing ones)
can start under both the old key and the new one.

Safe defaults, because every run may spend money:
- **No backfill.** A scheduler fires the ticks after it started, never the ones missed while
  no process was running: a worker that was down for a night does not start a night's runs.
  Nor does a version fire ticks from before it was published.
- **A grace, not a catch-up.** The loop sleeps until the next tick (at most
  `max_interval_seconds`, so new versions are seen) and fires every tick since its last look,
  so a tick that fell due while it slept is fired when it wakes. `wake()` makes it look at
  once (the service calls it when a version is published or republished). A tick more than
  `grace_seconds` late (the process was suspended or blocked) is skipped and logged.
- **One bad schedule stops only itself.** A schedule whose run cannot start (whatever the
  error, a database's included), or a version that no longer loads, is logged (secrets
  masked) and skipped; the others keep firing. Its ticks are not retried, and no tick whose
  run started is started again: their keys find the runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, Self

from klingflow.errors import KlingflowError
from klingflow.redaction import redact_values
from klingflow.workflows.records import RunRecord
from klingflow.workflows.registry import PublishedWorkflow, WorkflowRegistry
from klingflow.workflows.spec import ScheduleSpec, Workflow

if TYPE_CHECKING:  # the engine imports DBOS, which only the running process needs
    from klingflow.workflows.engine import Engine

__all__ = [
    "DEFAULT_GRACE_SECONDS",
    "DEFAULT_MAX_INTERVAL_SECONDS",
    "Scheduler",
    "schedule_key",
]

DEFAULT_MAX_INTERVAL_SECONDS: Final = 30.0
"""The longest the loop sleeps between looks at the registry, even with no tick due."""
DEFAULT_GRACE_SECONDS: Final = 60.0
"""How late a tick may still be fired; later ones are skipped (never a burst of catch-up)."""
_WAKE_MARGIN_SECONDS: Final = 0.005  # wake just after a tick, not a hair before it
_UNLOADABLE_MEMORY: Final = 256  # versions known not to load, each logged once

logger = logging.getLogger("klingflow.schedules")


def schedule_key(workflow_name: str, schedule: str, tick: datetime) -> str:
    """The idempotency key of a tick's run: `schedule:NAME:SCHEDULE:2025-01-31T09:00:00Z`."""
    at = tick.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"schedule:{workflow_name}:{schedule}:{at}"


@dataclass(frozen=True)
class _Scheduled:
    """One schedule of the latest version of a workflow."""

    workflow: Workflow
    version_hash: str
    """The published version's hash, checked against the latest before each run starts."""
    index: int
    schedule: ScheduleSpec
    published_at: datetime
    """Ticks before the version was (last) published are not its to fire."""

    @property
    def label(self) -> str:
        return f"{self.workflow.name}:{self.schedule.key()}"


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class Scheduler:
    """Fires the schedules of the workflows published in `registry`, through `engine`.

    `async with Scheduler(engine, registry):` runs it in a background task until the block
    exits; `fire_due(now)` is one look, for tests and for callers with their own loop.
    """

    def __init__(
        self,
        engine: Engine,
        registry: WorkflowRegistry,
        *,
        max_interval_seconds: float | timedelta = DEFAULT_MAX_INTERVAL_SECONDS,
        grace_seconds: float | timedelta = DEFAULT_GRACE_SECONDS,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.max_interval_seconds = _seconds(max_interval_seconds)
        self.grace_seconds = _seconds(grace_seconds)
        if self.max_interval_seconds <= 0:
            raise ValueError("max_interval_seconds must be positive")
        if self.grace_seconds < 0:
            raise ValueError("grace_seconds must not be negative")
        self.last_checked: datetime | None = None
        """The end of the window already fired; None until the first look (or `start`)."""
        self._scheduled: list[_Scheduled] = []
        # Parsing is cached by the registry (`PublishedWorkflow.load`); failures are not, so
        # the versions that fail are remembered here, least recently seen forgotten first.
        self._unloadable: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._starting: set[asyncio.Future[RunRecord]] = set()  # shielded from `aclose`
        self._wake = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def start(self) -> None:
        """Fire from now on in a background task of the running loop (no backfill)."""
        if self._task is not None:
            raise RuntimeError("this Scheduler is already running")
        self.last_checked = datetime.now(UTC)
        self._task = asyncio.create_task(self._loop(), name="klingflow-scheduler")

    async def aclose(self) -> None:
        """Stop the background task, cutting short a look in progress: the ticks it had not
        started yet are left to the other processes still firing (their keys dedupe). A run
        being started is started to the end (written and queued) before this returns."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # the task's own CancelledError stays inside it
        if self._starting:
            done, _ = await asyncio.wait(self._starting)
            for start in done:  # retrieved, so asyncio does not report it as never retrieved
                if not start.cancelled() and (error := start.exception()) is not None:
                    logger.error(
                        "schedules: a run being started at shutdown failed: %s",
                        self._masked(f"{type(error).__name__}: {error}"),
                    )

    @property
    def is_running(self) -> bool:
        """Whether the schedule loop is alive (it stops with its engine, or on a crash)."""
        return self._task is not None and not self._task.done()

    async def _loop(self) -> None:
        while True:
            try:
                await self.fire_due(datetime.now(UTC))
            except Exception:
                # Nobody awaits this task: an error it let out would end every schedule
                # silently. The database may be down for a while; log it and look again.
                logger.exception(
                    "schedules: looking for due ticks failed; trying again within %.0f s",
                    self.max_interval_seconds,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), self.seconds_until_next(datetime.now(UTC))
                )
            self._wake.clear()

    def wake(self) -> None:
        """Look at the registry now, not at the next tick: a version was just published."""
        self._wake.set()

    # -- one look ----------------------------------------------------------------------------

    async def fire_due(self, now: datetime) -> list[RunRecord]:
        """Start the run of every tick in (last look, `now`]; returns them in tick order.

        The runs returned include those another process (or an earlier look) started for the
        same ticks. The first look of a scheduler that was not `start`ed fires nothing: it
        only sets where the window begins. Ticks more than `grace_seconds` before `now` are
        skipped. The latest published version of every workflow is read at each look, and
        checked again just before each run starts: a version replaced since fires no more.
        A schedule whose run fails to start is logged and skips its other ticks of this look;
        the other schedules still fire.
        """
        if now.tzinfo is None:
            raise ValueError("now must be a timezone-aware datetime")
        self._scheduled = await asyncio.to_thread(self._read_schedules)
        if self.last_checked is None:
            self.last_checked = now
            return []
        after = max(self.last_checked, now - timedelta(seconds=self.grace_seconds))
        if after > self.last_checked:
            self._report_skipped(self.last_checked, after)
        due = sorted(
            (
                (tick, scheduled)
                for scheduled in self._scheduled
                for tick in scheduled.schedule.ticks(
                    after=max(after, scheduled.published_at), until=now
                )
            ),
            key=lambda pair: (pair[0], pair[1].workflow.name, pair[1].index),
        )
        runs: list[RunRecord] = []
        failed: set[str] = set()
        for tick, scheduled in due:
            if scheduled.label in failed:
                continue  # its next ticks would fail for the same reason
            run = await self._start(scheduled, tick)
            if run is None:
                failed.add(scheduled.label)
            else:
                runs.append(run)
        # Only now: when a look fails half way, the next one retries the window, and the keys
        # make the ticks already started come back as the same runs.
        self.last_checked = max(self.last_checked, now)
        return runs

    def seconds_until_next(self, now: datetime) -> float:
        """How long the loop sleeps after a look: until the next tick, capped."""
        upcoming = [
            tick
            for scheduled in self._scheduled
            if (tick := scheduled.schedule.next_tick(after=now)) is not None
        ]
        if not upcoming:
            return self.max_interval_seconds
        wait = (min(upcoming) - now).total_seconds() + _WAKE_MARGIN_SECONDS
        return min(self.max_interval_seconds, max(0.0, wait))

    async def _start(self, scheduled: _Scheduled, tick: datetime) -> RunRecord | None:
        """The tick's run (started now, or found by its key), or None when it was not started:
        the version was replaced, or starting failed (logged)."""
        workflow, schedule = scheduled.workflow, scheduled.schedule
        key = schedule_key(workflow.name, schedule.key(), tick)
        try:
            latest = await asyncio.to_thread(self.registry.latest_hash, workflow.name)
            if latest != scheduled.version_hash:
                logger.info(
                    "schedule %s: %s not started, version %s is no longer the latest",
                    scheduled.label,
                    key,
                    scheduled.version_hash[:12],
                )
                return None
            # Shielded: cancelled between writing the run and queueing it, the run would wait
            # for the next launch. `aclose` waits for it instead.
            start = asyncio.ensure_future(
                self.engine.start_run(
                    workflow, copy.deepcopy(schedule.payload), idempotency_key=key
                )
            )
            self._starting.add(start)
            start.add_done_callback(self._starting.discard)
            run = await asyncio.shield(start)
        except KlingflowError as error:
            logger.warning(
                "schedule %s: the run of %s was not started: %s",
                scheduled.label,
                key,
                self._masked(str(error)),
            )
            return None
        except Exception as error:
            # Not ours (a database refusing the row, a bug): one schedule must not stop the
            # others, which a look cut short would. No traceback at this level: it would show
            # the error's text (SQL parameters included) unmasked.
            logger.error(
                "schedule %s: the run of %s was not started, unexpected %s: %s",
                scheduled.label,
                key,
                type(error).__name__,
                self._masked(str(error)),
            )
            logger.debug("%s", self._masked("".join(traceback.format_exception(error))))
            return None
        logger.info("schedule %s: %s is %s", scheduled.label, key, run.run_id)
        return run

    def _report_skipped(self, since: datetime, cutoff: datetime) -> None:
        for scheduled in self._scheduled:
            missed = scheduled.schedule.next_tick(after=since)
            if missed is not None and missed <= cutoff:
                logger.warning(
                    "schedule %s: ticks from %s to %s were skipped, more than %.0f s late "
                    "(the process was busy or suspended)",
                    scheduled.label,
                    missed.isoformat(),
                    cutoff.isoformat(),
                    self.grace_seconds,
                )

    # -- reading the registry (in a thread: the database and YAML parsing block) ------------

    def _read_schedules(self) -> list[_Scheduled]:
        scheduled: list[_Scheduled] = []
        for name in self.registry.names():
            published = self.registry.latest(name)
            workflow = None if published is None else self._load(published)
            if published is None or workflow is None:
                continue
            since = datetime.fromtimestamp(published.created_at, UTC)
            scheduled += [
                _Scheduled(workflow, published.hash, index, schedule, since)
                for index, schedule in enumerate(workflow.schedules)
            ]
        return scheduled

    def _load(self, published: PublishedWorkflow) -> Workflow | None:
        """The version's workflow, or None (logged once) when it no longer loads."""
        version = (published.name, published.hash)
        if version in self._unloadable:
            self._unloadable.move_to_end(version)
            return None
        try:
            return published.load()
        except Exception as error:  # a parser bug too: the other workflows still fire
            self._unloadable[version] = None
            if len(self._unloadable) > _UNLOADABLE_MEMORY:
                self._unloadable.popitem(last=False)
            reason = str(error)
            if not isinstance(error, KlingflowError):
                reason = f"unexpected {type(error).__name__}: {reason}"
            logger.warning(
                "workflow %s (version %s) no longer loads, its schedules are skipped: %s",
                published.name,
                published.hash[:12],
                self._masked(reason),
            )
            return None

    def _masked(self, text: str) -> str:
        masked: str = redact_values(text, self.engine.runlog.secrets)
        return masked
