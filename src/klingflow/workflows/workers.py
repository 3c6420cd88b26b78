"""Which engines share the database, whether they are alive, and who takes over a dead one.

Every engine writes a heartbeat row in `kf_workers` when it starts and every
`heartbeat_seconds` after. `klingflow workers` lists the rows; `klingflow recover
EXECUTOR_ID` records a request on a row, and the next live engine to beat claims it and
hands that executor's pending runs and loop chunks back to their queues, where any live
engine picks them up. With `takeover_after_seconds` set, engines also claim executors that
have been silent that long, without a request.

Recovery cannot submit a PiAPI task twice: it only makes DBOS run a workflow again from its
last checkpoint, and the run log's intent journal decides whether a submission happens. A
claim is one conditional UPDATE, so two live engines never both recover one executor for
the same silence (DBOS's re-enqueue is idempotent too: a workflow already picked up by a live
engine no longer matches).

Times come from the database's clock on Postgres, so machines whose clocks disagree still
agree on who is silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from klingflow.workflows.database import is_sqlite
from klingflow.workflows.schema import create_tables, workers

__all__ = [
    "ALIVE_BEATS",
    "Heartbeat",
    "WorkerInfo",
    "WorkerRegistry",
]

logger = logging.getLogger("klingflow.workers")

ALIVE_BEATS = 3
"""An executor is alive while its last heartbeat is younger than this many intervals."""


@dataclass(frozen=True)
class WorkerInfo:
    """One executor as `klingflow workers` shows it."""

    executor_id: str
    hostname: str
    pid: int
    mode: str
    heartbeat_seconds: float
    started_at: float
    heartbeat_at: float
    stopped_at: float | None
    recover_requested_at: float | None
    recovered_by: str | None
    recovered_at: float | None
    recovered_runs: int | None
    now: float

    @property
    def silent_seconds(self) -> float:
        """Seconds since the last heartbeat, by the database's clock (no skew between hosts)."""
        return max(0.0, self.now - self.heartbeat_at)

    @property
    def state(self) -> str:
        """alive, stopped, silent, or recovered (by another executor, after it fell silent)."""
        if self.stopped_at is not None and self.stopped_at >= self.heartbeat_at:
            state = "stopped"
        elif self.silent_seconds < ALIVE_BEATS * self.heartbeat_seconds:
            return "alive"
        else:
            state = "silent"
        if self.recovered_at is not None and self.recovered_at >= self.heartbeat_at:
            return "recovered"
        return state


class WorkerRegistry:
    """Reads and writes `kf_workers`; every call is one short transaction."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        create_tables(engine)

    def _now(self) -> sa.ColumnElement[float]:
        """The database's clock (Postgres) or this machine's (SQLite: one machine)."""
        if is_sqlite(str(self.engine.url)):
            return sa.literal(time.time(), sa.Float)
        return sa.cast(sa.func.extract("epoch", sa.func.clock_timestamp()), sa.Float)

    def register(self, executor_id: str, *, mode: str, heartbeat_seconds: float) -> None:
        """This process now runs as `executor_id`: a fresh row, earlier recoveries forgotten."""
        values = {
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "mode": mode,
            "heartbeat_seconds": heartbeat_seconds,
            "started_at": self._now(),
            "heartbeat_at": self._now(),
            "stopped_at": None,
            "recover_requested_at": None,
            "recovered_by": None,
            "recovered_at": None,
            "recovered_runs": None,
        }
        with self.engine.begin() as connection:
            updated = connection.execute(
                workers.update().where(workers.c.executor_id == executor_id).values(**values)
            )
            if updated.rowcount == 0:
                connection.execute(workers.insert().values(executor_id=executor_id, **values))

    def beat(self, executor_id: str) -> None:
        """Say this executor is alive now (and no longer stopped, after a restart)."""
        with self.engine.begin() as connection:
            connection.execute(
                workers.update()
                .where(workers.c.executor_id == executor_id)
                .values(heartbeat_at=self._now(), stopped_at=None)
            )

    def stopped(self, executor_id: str) -> None:
        """Say this executor stopped cleanly: its silence then means nothing to take over."""
        with self.engine.begin() as connection:
            connection.execute(
                workers.update()
                .where(workers.c.executor_id == executor_id)
                .values(stopped_at=self._now())
            )

    def all(self) -> list[WorkerInfo]:
        """Every executor this database has seen, as `klingflow workers` lists them."""
        with self.engine.connect() as connection:
            now = connection.execute(sa.select(self._now())).scalar_one()
            rows = connection.execute(workers.select().order_by(workers.c.executor_id)).all()
        return [WorkerInfo(**row._mapping, now=now) for row in rows]

    def get(self, executor_id: str) -> WorkerInfo | None:
        """One executor's row, or None when it never ran against this database."""
        found = [w for w in self.all() if w.executor_id == executor_id]
        return found[0] if found else None

    def request_recovery(self, executor_id: str) -> None:
        """Ask the live engines to take over `executor_id`'s runs (known or not)."""
        with self.engine.begin() as connection:
            updated = connection.execute(
                workers.update()
                .where(workers.c.executor_id == executor_id)
                .values(recover_requested_at=self._now())
            )
            if updated.rowcount == 0:  # never beat (an engine older than heartbeats)
                connection.execute(
                    workers.insert().values(
                        executor_id=executor_id,
                        hostname="?",
                        pid=0,
                        mode="unknown",
                        heartbeat_seconds=0.0,
                        started_at=0.0,
                        heartbeat_at=0.0,
                        recover_requested_at=self._now(),
                    )
                )

    def _due(self, me: str, takeover_after_seconds: float | None) -> sa.ColumnElement[bool]:
        """Executors to take over: requested and not yet done, or silent too long."""

        def not_done_since(at: sa.ColumnElement[float]) -> sa.ColumnElement[bool]:
            return sa.or_(workers.c.recovered_at.is_(None), workers.c.recovered_at < at)

        requested = sa.and_(
            workers.c.recover_requested_at.is_not(None),
            not_done_since(workers.c.recover_requested_at),
        )
        due = requested
        if takeover_after_seconds is not None:
            silent = sa.and_(
                workers.c.heartbeat_at < self._now() - takeover_after_seconds,
                not_done_since(workers.c.heartbeat_at),
            )
            due = sa.or_(requested, silent)
        return sa.and_(workers.c.executor_id != me, due)

    def claim(self, me: str, takeover_after_seconds: float | None) -> list[str]:
        """Claim the executors due for takeover; each is claimed by one engine only."""
        due = self._due(me, takeover_after_seconds)
        with self.engine.connect() as connection:
            candidates = connection.execute(sa.select(workers.c.executor_id).where(due)).all()
        claimed: list[str] = []
        for (executor_id,) in candidates:
            with self.engine.begin() as connection:
                won = connection.execute(
                    workers.update()
                    .where(workers.c.executor_id == executor_id, due)
                    .values(recovered_by=me, recovered_at=self._now(), recovered_runs=None)
                )
            if won.rowcount == 1:
                claimed.append(executor_id)
        return claimed

    def recovered(self, executor_id: str, count: int) -> None:
        """Record how many runs a takeover handed back, for `klingflow workers` to show."""
        with self.engine.begin() as connection:
            connection.execute(
                workers.update()
                .where(workers.c.executor_id == executor_id)
                .values(recovered_runs=count)
            )


class Heartbeat:
    """The task that keeps this engine's row fresh and takes over dead executors.

    `recover` hands one executor's pending workflows back to their queues and returns how
    many (the engine passes its one call into DBOS's private recovery). `None` means this
    process executes nothing (`serve --no-execute`): it beats, but claims no work.
    """

    def __init__(
        self,
        registry: WorkerRegistry,
        executor_id: str,
        *,
        mode: str,
        heartbeat_seconds: float,
        takeover_after_seconds: float | None,
        recover: Callable[[str], int] | None,
        renew: Callable[[], None] | None = None,
    ) -> None:
        self.registry = registry
        self.executor_id = executor_id
        self.mode = mode
        self.heartbeat_seconds = heartbeat_seconds
        self.takeover_after_seconds = takeover_after_seconds
        self.recover = recover
        self.renew = renew  # this engine's leases on the account's limits (leases.py)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Register this executor and start beating."""
        await asyncio.to_thread(
            self.registry.register,
            self.executor_id,
            mode=self.mode,
            heartbeat_seconds=self.heartbeat_seconds,
        )
        self._task = asyncio.create_task(self._loop(), name="klingflow-heartbeat")

    async def stop(self) -> None:
        """Stop beating and mark this executor stopped (best effort: the database may be down)."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        with contextlib.suppress(Exception):  # the database may be the reason we stop
            await asyncio.to_thread(self.registry.stopped, self.executor_id)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await asyncio.to_thread(self.registry.beat, self.executor_id)
                if self.renew is not None:
                    await asyncio.to_thread(self.renew)
                await self.take_over()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a Postgres restart: beat again next time
                logger.warning("heartbeat of %s failed: %s", self.executor_id, error)

    async def take_over(self) -> list[str]:
        """Claim and recover the executors that are due; returns their ids."""
        if self.recover is None:
            return []
        claimed: list[str] = await asyncio.to_thread(
            self.registry.claim, self.executor_id, self.takeover_after_seconds
        )
        for executor_id in claimed:
            count = await asyncio.to_thread(self.recover, executor_id)
            await asyncio.to_thread(self.registry.recovered, executor_id, count)
            logger.warning(
                "%s took over %d pending workflows of executor %s",
                self.executor_id,
                count,
                executor_id,
            )
        return claimed
