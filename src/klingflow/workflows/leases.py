"""The account's limits held across every worker on one Postgres database, with leases.

`KLINGFLOW_CONCURRENCY` (our tasks in flight at PiAPI) and `KLINGFLOW_REQUESTS_PER_MINUTE`
are the account's limits, not each process's. On Postgres each limit is a table of numbered
slots (`kf_leases`, one row per slot): a task or a request takes a free slot with one UPDATE
(`FOR UPDATE SKIP LOCKED` picks it, so concurrent takers never wait on each other or collide),
and gives it back when the task is seen to finish or the answer arrives. A process looks for
the next free slot after the one it took last, wrapping round to slot 0 (a second UPDATE) only
past the limit: a request slot stays busy 60 s after its answer, and a search from slot 0
walked past every one of them, thousands at a few hundred requests a second. The client's own
throttle interface is kept: `LeasedRequests` and `LeasedTasks` stand in for
`AsyncRequestThrottle` and `AsyncTaskSlots` (see `AsyncPiAPI.share_limits`).

A slot is leased, not owned: the engine's heartbeat extends its holder's leases in one UPDATE
per beat, so a worker that dies gives its share back within `lease_seconds`. A request slot
stays counted for 60 s after its answer, as the in-memory window does (piapi/throttle.py).

Waiting for a slot: the first taker of a kind tries at once; while every slot is busy, this
process's takers queue (first come, first served) and only the first of them asks the
database, with growing pauses, cut short when this process gives a slot back. Each waiting
create asking for itself sent a burst of UPDATEs (15 in a 20-video batch, in step) through
the event loop's few threads twice a second, where the webhooks' confirming GETs and the
nodes' ends queued behind them (bench/notes.md, session 12).

On SQLite (one process) the client keeps its in-memory throttle: nothing here is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import sqlalchemy as sa

from klingflow.workflows.group_commit import GroupCommit, Write
from klingflow.workflows.schema import create_tables, leases
from klingflow.workflows.transactions import transaction

__all__ = ["LeasedRequests", "LeasedTasks", "Leases"]

logger = logging.getLogger("klingflow.leases")

RETRY_PAUSES_SECONDS = (0.02, 0.05, 0.1, 0.2, 0.5)
"""Pauses between attempts to take a slot while all are taken (then 0.5 s each)."""
DRAIN_ROUNDS = 4
"""`Leases.drain`'s rounds: a take, then the give-back it starts, with room to spare."""


def _freed(*, ended_at: Any) -> dict[str, Any]:
    """A free slot's columns: nobody holds it; `ended_at` keeps a request's in its window."""
    return {"holder": None, "lease_id": None, "task_id": None, "expires_at": None,
            "ended_at": ended_at}  # fmt: skip


_TAKE = sa.text(
    """
    UPDATE kf_leases SET holder = :holder, lease_id = :lease_id, task_id = NULL,
        ended_at = NULL, expires_at = clock_timestamp() + make_interval(secs => :lease)
    WHERE kind = :kind AND slot = (
        SELECT slot FROM kf_leases
        WHERE kind = :kind AND slot >= :start AND slot < :limit
          AND CASE WHEN holder IS NULL
                THEN ended_at IS NULL
                     OR ended_at < clock_timestamp() - make_interval(secs => :window)
                ELSE expires_at < clock_timestamp() END
        ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING slot
    """
)
"""Take one free slot in [start, limit): never taken, lease run out (a dead holder), or answered
long enough ago. One round trip; returns no row when every slot there is busy."""

_COUNT_SLOTS = sa.text("SELECT count(*) FROM kf_leases WHERE kind = :kind AND slot < :count")
_ADD_SLOTS = sa.text(
    """
    INSERT INTO kf_leases (kind, slot)
    SELECT :kind, n FROM generate_series(0, CAST(:count AS integer) - 1) AS n
    ON CONFLICT DO NOTHING
    """
)
"""The slots 0..count-1 of a kind, made where missing (processes may add them at once)."""

_BIND = sa.text(
    """
    UPDATE kf_leases AS l SET task_id = v.task_id
    FROM unnest(CAST(:slots AS integer[]), CAST(:lease_ids AS text[]), CAST(:task_ids AS text[]))
        AS v(slot, lease_id, task_id)
    WHERE l.kind = 'task' AND l.slot = v.slot AND l.lease_id = v.lease_id
    """
)
"""Tie task slots to their tasks (a restart reclaims them by this); one statement for many."""

_GIVE_BACK = sa.text(
    """
    UPDATE kf_leases AS l SET holder = NULL, lease_id = NULL, task_id = NULL,
        expires_at = NULL, ended_at = CASE WHEN v.answered THEN clock_timestamp() END
    FROM unnest(CAST(:kinds AS text[]), CAST(:slots AS integer[]), CAST(:lease_ids AS text[]),
                CAST(:answered AS boolean[])) AS v(kind, slot, lease_id, answered)
    WHERE l.kind = v.kind AND l.slot = v.slot AND l.lease_id = v.lease_id
    """
)
"""Free slots (a request's stays counted in its window from now: `ended_at`); one statement
for many. Both are idempotent: a lease given back no longer matches its lease id."""

_RENEW = sa.text(
    """
    UPDATE kf_leases SET expires_at = clock_timestamp() + make_interval(secs => :lease)
    WHERE (kind, slot) IN (
        SELECT kind, slot FROM kf_leases WHERE holder = :holder FOR UPDATE SKIP LOCKED)
    """
)
"""Extend a holder's leases, but for the rows another transaction has locked."""

_Return = tuple[str, int, str, bool]
"""A give-back: kind, slot, lease id, whether a request was answered (counts on 60 s)."""


def _write_back(
    connection: sa.Connection, binds: list[tuple[int, str, str]], returns: list[_Return]
) -> None:
    """Binds, then give-backs (a task bound and freed in one batch ends free)."""
    if binds:
        slots, lease_ids, task_ids = zip(*binds, strict=True)
        connection.execute(
            _BIND, {"slots": list(slots), "lease_ids": list(lease_ids), "task_ids": list(task_ids)}
        )
    if returns:
        kinds, slots, lease_ids, answered = zip(*returns, strict=True)
        connection.execute(
            _GIVE_BACK,
            {"kinds": list(kinds), "slots": list(slots), "lease_ids": list(lease_ids),
             "answered": list(answered)},
        )  # fmt: skip


@dataclass
class _Queue:
    """This process's takers of one kind of slot waiting for one to free (see the module)."""

    turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by the one waiter that asks the database; the others wait for it in order."""
    freed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when this process gave a slot of the kind back: the asking waiter asks again."""


class Leases:
    """One engine's leases on a Postgres database, under its executor id."""

    def __init__(
        self,
        engine: sa.Engine,
        holder: str,
        *,
        lease_seconds: float,
        group: GroupCommit | None = None,
    ) -> None:
        self.engine = engine
        self.holder = holder
        self.lease_seconds = lease_seconds
        self.group = group or GroupCommit(engine, off_loop=True, alone=transaction)
        """Where the event loop's takes and give-backs commit, with the others queued at the
        same moment (the engine's: the run log's writes too): a transaction, a pooled
        connection and its ping each cost more than the UPDATE itself."""
        self._background: set[asyncio.Future[Any]] = set()
        self._queues: dict[str, _Queue] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._binds: list[tuple[int, str, str]] = []
        self._returns: list[_Return] = []
        """Binds and give-backs waiting for this process's next write-back (`_write_soon`)."""
        self._writing: asyncio.Task[None] | None = None
        self._next: dict[str, int] = {}
        """Per kind, the slot after the one taken last: where the next take starts looking."""
        create_tables(engine)

    def queue(self, kind: str) -> _Queue:
        """The waiting line of `kind` on the running event loop (a new loop: new lines)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._queues = loop, {}
        return self._queues.setdefault(kind, _Queue())

    def ensure_slots(self, kind: str, count: int) -> None:
        """Slots 0..count-1 of `kind` exist (each process may add; none removes).

        Counted first, and any missing made by the server in one statement: every engine
        start passes here, and a row sent per slot made a worker with a limit of 100,000
        requests a minute spend seconds of CPU at each start."""
        params = {"kind": kind, "count": count}
        with self.engine.begin() as connection:
            if connection.execute(_COUNT_SLOTS, params).scalar_one() < count:
                connection.execute(_ADD_SLOTS, params)

    def take(self, kind: str, limit: int, *, window_seconds: float = 0.0) -> tuple[int, str] | None:
        """A free slot of `kind` among the first `limit`, leased to this holder; else None."""
        write = self.take_write(kind, limit, window_seconds=window_seconds)
        return transaction(self.engine, write.body, committed=write.committed)

    def take_write(
        self, kind: str, limit: int, *, window_seconds: float = 0.0
    ) -> Write[tuple[int, str] | None]:
        """`take` as a write for a group commit (a cut COMMIT is settled by its lease id)."""
        lease_id = uuid.uuid4().hex
        params = {
            "holder": self.holder,
            "lease_id": lease_id,
            "lease": self.lease_seconds,
            "kind": kind,
            "limit": limit,
            "window": window_seconds,
        }
        mine = sa.select(leases.c.slot).where(leases.c.lease_id == lease_id)

        def body(connection: sa.Connection) -> tuple[int, str] | None:
            start = self._next.get(kind, 0)
            start = start if start < limit else 0
            row = connection.execute(_TAKE, {**params, "start": start}).first()
            if row is None and start > 0:  # none free from there on: from slot 0 up to it
                row = connection.execute(_TAKE, {**params, "start": 0, "limit": start}).first()
            if row is None:
                return None
            self._next[kind] = int(row[0]) + 1
            return int(row[0]), lease_id

        # A cut COMMIT that took the slot: that slot is ours.
        return Write(body, committed=lambda c: c.execute(mine).first() is not None)

    def give_back(self, kind: str, slot: int, lease_id: str, *, answered: bool) -> None:
        """Free a slot (a request's stays counted in its window from now: `ended_at`)."""
        returns = [(kind, slot, lease_id, answered)]
        transaction(self.engine, lambda c: _write_back(c, [], returns), idempotent=True)

    def give_back_soon(self, kind: str, slot: int, lease_id: str, *, answered: bool) -> None:
        """`give_back` off the event loop, with the others of the moment in one statement; a
        late give-back only over-counts."""
        self._returns.append((kind, slot, lease_id, answered))
        self._write_soon()

    def bind_task_soon(self, slot: int, lease_id: str, task_id: str) -> None:
        """Count the slot's task until it is seen finished (a restart reclaims it by this),
        off the event loop like `give_back_soon`."""
        self._binds.append((slot, lease_id, task_id))
        self._write_soon()

    def renew(self) -> None:
        """Extend every lease this holder has: one UPDATE, from the heartbeat.

        Rows a write-back of this process has locked are skipped (it is giving them back or
        tying them to a task; the next beat extends them): a write-back gives several slots
        back in one statement, and waiting for it in another order could deadlock."""
        with self.engine.begin() as connection:
            connection.execute(_RENEW, {"holder": self.holder, "lease": self.lease_seconds})

    def reclaim(self) -> list[tuple[int, str, str]]:
        """At start, the leases already under this executor id: a restarted worker's, from
        its previous life (whose heartbeat this one would otherwise renew for ever). Request
        slots, and task slots bound to no task, are given back (a request stays counted in
        its window); (slot, lease_id, task_id) of each task slot bound to a task is returned,
        so that task counts until it is seen finished."""
        mine = leases.c.holder == self.holder
        with self.engine.begin() as connection:
            connection.execute(
                leases.update()
                .where(mine, sa.or_(leases.c.kind == "request", leases.c.task_id.is_(None)))
                .values(**_freed(ended_at=sa.func.clock_timestamp()))
            )
            rows = connection.execute(
                sa.select(leases.c.slot, leases.c.lease_id, leases.c.task_id).where(
                    mine, leases.c.kind == "task"
                )
            ).all()
        return [(int(slot), str(lease_id), str(task_id)) for slot, lease_id, task_id in rows]

    def release_all(self) -> None:
        """At a clean shutdown: give every slot back (tasks still running are the next
        engine's to count again)."""
        with self.engine.begin() as connection:
            connection.execute(
                leases.update()
                .where(leases.c.holder == self.holder)
                .values(**_freed(ended_at=sa.func.clock_timestamp()))
            )

    def _write_soon(self) -> None:
        """One write-back at a time, of everything queued while the last one committed (it
        rides the group commit); a kind's slot freed wakes this process's waiter for one."""
        loop = asyncio.get_running_loop()
        writing = self._writing
        if writing is not None and not writing.done() and writing.get_loop() is loop:
            return

        async def write_back() -> None:
            while self._binds or self._returns:
                binds, returns, self._binds, self._returns = self._binds, self._returns, [], []
                write = Write(partial(_write_back, binds=binds, returns=returns), idempotent=True)
                try:
                    await self.group.run(write)
                except Exception as error:  # the leases run out by themselves
                    logger.warning("could not give %d leases back: %s", len(returns), error)
                    continue
                for kind in {kind for kind, _, _, answered in returns if not answered}:
                    self.queue(kind).freed.set()

        self._writing = loop.create_task(write_back())
        self.track(self._writing)

    def track(self, work: asyncio.Future[Any]) -> None:
        """Count `work` (a take or a give-back on its way) among what `drain` waits for."""
        self._background.add(work)
        work.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for the takes and give-backs still on their way, so a closing engine leaves
        no slot held: a take that lands after its caller was cancelled starts a give-back,
        which the next round waits for (a few rounds at most, should requests go on)."""
        for _ in range(DRAIN_ROUNDS):
            if not self._background:
                return
            await asyncio.gather(*self._background, return_exceptions=True)


async def _take_once(
    leases_: Leases, kind: str, limit: int, window: float
) -> tuple[int, str] | None:
    """One attempt to take a slot. A caller cancelled meanwhile (a stopping engine) gets
    nothing, so the slot its write may still take is given back when the write lands:
    else the heartbeat would renew it for as long as the process lives."""
    taking = asyncio.ensure_future(
        leases_.group.run(leases_.take_write(kind, limit, window_seconds=window))
    )
    leases_.track(taking)
    try:
        return await asyncio.shield(taking)
    except asyncio.CancelledError:

        def give_back(done: asyncio.Future[tuple[int, str] | None]) -> None:
            if not done.cancelled() and done.exception() is None and (taken := done.result()):
                slot, lease_id = taken
                leases_.give_back_soon(kind, slot, lease_id, answered=False)

        taking.add_done_callback(give_back)
        raise


async def _take(
    leases_: Leases, kind: str, limit: int, window: float, timeout: float | None
) -> tuple[int, str] | None:
    """Take a slot, waiting while all are busy, for up to `timeout` seconds (None: forever):
    at once when nobody here waits; else in this process's line for the kind."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    queue = leases_.queue(kind)
    if not queue.turn.locked():
        taken = await _take_once(leases_, kind, limit, window)
        if taken is not None:
            return taken
    try:
        async with asyncio.timeout_at(deadline):
            await queue.turn.acquire()
    except TimeoutError:
        return None
    try:
        attempt = 0
        while True:
            queue.freed.clear()  # a slot given back from now on is seen below
            taken = await _take_once(leases_, kind, limit, window)
            if taken is not None:
                return taken
            pause = RETRY_PAUSES_SECONDS[min(attempt, len(RETRY_PAUSES_SECONDS) - 1)]
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    return None
                pause = min(pause, left)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await queue.freed.wait()
            attempt += 1
    finally:
        queue.turn.release()


class LeasedRequests:
    """`AsyncRequestThrottle`'s interface over `request` slots: at most `requests_per_minute`
    requests sent or answered within the last 60 s, by all workers together."""

    WINDOW_SECONDS = 60.0

    def __init__(self, leases_: Leases, requests_per_minute: int) -> None:
        self.leases = leases_
        self.limit = requests_per_minute
        self._held: deque[tuple[int, str]] = deque()
        leases_.ensure_slots("request", requests_per_minute)

    async def acquire(self, *, is_deferrable: bool = False) -> None:
        """Take one request slot of the account's minute, waiting while every one is taken."""
        # Shared leases keep no queue of their own, so a deferrable look is not held back
        # for creates here: across workers, slots go first come, first served.
        taken = await _take(self.leases, "request", self.limit, self.WINDOW_SECONDS, None)
        assert taken is not None
        self._held.append(taken)

    async def release(self) -> None:
        """Give a request slot back once the request is answered (it still counts for 60 s)."""
        # Our held request slots are interchangeable: give back the oldest.
        slot, lease_id = self._held.popleft()
        self.leases.give_back_soon("request", slot, lease_id, answered=True)


class LeasedTasks:
    """`AsyncTaskSlots`'s interface over `task` slots: at most `limit` of the account's tasks
    in flight at PiAPI, by all workers together."""

    def __init__(self, leases_: Leases, limit: int) -> None:
        self.leases = leases_
        self._limit = limit
        self._reserved: deque[tuple[int, str]] = deque()
        self._running: dict[str, tuple[int, str]] = {}  # insertion-ordered: oldest first
        leases_.ensure_slots("task", limit)
        for slot, lease_id, task_id in leases_.reclaim():  # a restarted worker's own tasks
            self._running[task_id] = (slot, lease_id)

    @property
    def limit(self) -> int:
        """The account's task concurrency, shared by every worker."""
        return self._limit

    def running(self) -> list[str]:
        """The task ids this worker holds a slot for, oldest first."""
        return list(self._running)

    async def reserve(self, timeout_seconds: float) -> bool:
        """Hold a task slot for a create about to be sent; False when none frees in time."""
        taken = await _take(self.leases, "task", self._limit, 0.0, timeout_seconds)
        if taken is None:
            return False
        self._reserved.append(taken)
        return True

    def bind(self, task_id: str | None) -> None:
        """Tie the reserved slot to the task PiAPI made, or free it when nothing was made."""
        slot, lease_id = self._reserved.popleft()
        if task_id is None:  # the submit created nothing
            self.leases.give_back_soon("task", slot, lease_id, answered=False)
            return
        self._running[task_id] = (slot, lease_id)
        self.leases.bind_task_soon(slot, lease_id, task_id)

    def adopt(self, task_ids: list[str]) -> None:
        """`task_ids`: every task the run log has in flight, at start. This executor's own
        from before a restart were reclaimed then; one not among them finished before its
        slot's release was written (a crash between the two), and its slot is given back:
        else it was held, and renewed, for this worker's whole life. Another dead worker's
        tasks hold its leases until they run out (`KLINGFLOW_LEASE_SECONDS`)."""
        in_flight = set(task_ids)
        for task_id in [t for t in self._running if t not in in_flight]:
            slot, lease_id = self._running.pop(task_id)
            self.leases.give_back("task", slot, lease_id, answered=False)

    def finish(self, task_id: str) -> None:
        """Free the slot of a task seen finished at PiAPI."""
        held = self._running.pop(task_id, None)
        if held is None:
            return
        slot, lease_id = held
        self.leases.give_back_soon("task", slot, lease_id, answered=False)
