"""Group commit: the run log's hot-path writes from many coroutines share one transaction.

A loop with 100 videos in flight writes about six rows per video (the node, the intent at
each step of its life, the attempt). Each in a transaction of its own costs a BEGIN, a
COMMIT and a pooled connection per row, and on Postgres every round trip of them stalls the
event loop that also drives the HTTP requests. Here a write is queued and awaited, and the
writes queued together commit in one transaction:
- on Postgres (`off_loop=True`) in a worker thread, one batch after another, so the event
  loop never waits on the network and writes queue up while the previous batch commits;
- on SQLite on the event loop, `WINDOW_SECONDS` after the first write of a batch: a local
  commit costs less than a thread hand-off, and a turn of the loop alone gathered about two
  writes (bench/notes.md, session 15: 6.5 -> 1.1 transactions a video, 6.5 -> 5.6 ms of CPU).

A caller continues only once its own write committed, so every promise the intent journal
makes (recorded before the POST, the task id kept once it is known) holds as it did with a
transaction per write. When the shared transaction fails, none of it committed: each write
is run again alone (`transaction`), and gets its own answer or error, so one write's failure
is never another's. A COMMIT cut off in flight leaves the whole batch landed or none of it:
each write is then settled as `transaction` settles its own cut COMMIT (idempotent: run
again; a `committed` check: asked; neither: the error is raised).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

from klingflow.workflows import budget_tally

__all__ = ["GroupCommit", "Write"]

T = TypeVar("T")

MAX_BATCH = 500
"""Writes per shared transaction at most (a long one would hold SQLite's lock for long)."""
WINDOW_SECONDS = 0.005
"""SQLite: how long the writes of a batch gather before they commit. Each write waits this
long at most, about 30 ms over a video's life, against minutes of rendering."""

Outcome = tuple[bool, Any]
"""(True, the write's answer) or (False, the exception it raised)."""
Alone = Callable[..., Any]
"""How one write is run in a transaction of its own: `transactions.transaction`."""


@dataclass(frozen=True)
class Write(Generic[T]):
    """One write: what it does on a connection, and how it may be repeated after a cut
    COMMIT (see `transaction`)."""

    body: Callable[[sa.Connection], T]
    idempotent: bool = False
    committed: Callable[[sa.Connection], bool] | None = None


class GroupCommit:
    """Queues writes and commits those queued together in one transaction (see the module)."""

    def __init__(self, engine: sa.Engine, *, off_loop: bool, alone: Alone) -> None:
        self.engine = engine
        self.off_loop = off_loop
        self._transaction = alone
        self.transactions = 0
        """Transactions committed so far (shared or alone): for tests and the bench."""
        self._queue: list[tuple[Write[Any], asyncio.Future[Any]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        """The event loop whose writes are grouped (the first to write, until it closes);
        the queue is only touched on its thread."""
        self._drain: asyncio.Task[None] | None = None
        """The flush under way (on `_loop`): new writes join the queue meanwhile."""

    async def run(self, write: Write[T]) -> T:
        """Commit `write` with the others queued now; its answer, or its error, once done."""
        loop = asyncio.get_running_loop()
        if self._loop is None or self._loop.is_closed():  # its pending writes died with it
            self._loop, self._queue, self._drain = loop, [], None
        if loop is not self._loop:  # another event loop, in its own thread: alone
            answer: T = _result(self._alone(write))
            return answer
        future: asyncio.Future[T] = loop.create_future()
        self._queue.append((write, future))
        if not self.off_loop:
            if len(self._queue) == 1:
                loop.call_later(WINDOW_SECONDS, self._drain_here)
        elif self._drain is None or self._drain.done():
            self._drain = loop.create_task(self._drain_in_thread())
        return await future

    async def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`function` (run-log transactions of its own, off the hot path) where this group's
        writes commit: in a thread on Postgres, on the event loop on SQLite."""
        if not self.off_loop:
            return function(*args, **kwargs)
        return await asyncio.to_thread(function, *args, **kwargs)

    async def idle(self) -> None:
        """Wait until the writes under way have been committed (a closing engine)."""
        if not self.off_loop and self._queue and self._loop is asyncio.get_running_loop():
            self._drain_here()  # now, not at the end of the window
        while (drain := self._drain) is not None and not drain.done():
            if drain.get_loop() is not asyncio.get_running_loop():
                return
            await asyncio.gather(drain, return_exceptions=True)

    def _drain_here(self) -> None:
        """SQLite: the writes queued in the window, committed on the event loop."""
        batch: list[tuple[Write[Any], asyncio.Future[Any]]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                _settle(batch, self._commit(batch))
        except BaseException as error:  # the loop closing, or a bug: none waits for ever
            self._fail_waiting(batch, error)
            raise

    async def _drain_in_thread(self) -> None:
        batch: list[tuple[Write[Any], asyncio.Future[Any]]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                work = asyncio.ensure_future(asyncio.to_thread(self._commit, batch))
                try:
                    outcomes = await asyncio.shield(work)
                except asyncio.CancelledError:  # the loop is closing: let the thread finish
                    await asyncio.wait([work])  # with its connection, which it gives back
                    raise
                _settle(batch, outcomes)
        except BaseException as error:  # cancelled with the loop: nobody waits for an answer
            self._fail_waiting(batch, error)
            raise

    def _fail_waiting(
        self, batch: list[tuple[Write[Any], asyncio.Future[Any]]], error: BaseException
    ) -> None:
        """The writer stopped: every write still waiting, in `batch` or queued, fails."""
        for _, future in batch + self._queue:
            if not future.done():
                future.set_exception(RuntimeError(f"the run log's writer stopped: {error!r}"))
        self._queue = []

    def _commit(self, batch: list[tuple[Write[Any], asyncio.Future[Any]]]) -> list[Outcome]:
        """Every write of `batch` in one transaction; alone, each, if that fails."""
        writes = [write for write, _ in batch]
        if len(writes) == 1:
            return [self._alone(writes[0])]
        answers: list[Any] = []
        try:
            with budget_tally.begin(self.engine) as connection:
                answers = [write.body(connection) for write in writes]
            self.transactions += 1
            return [(True, answer) for answer in answers]
        except sa.exc.DBAPIError as error:
            if len(answers) == len(writes) and error.connection_invalidated:
                return [
                    self._after_cut_commit(w, a, error)
                    for w, a in zip(writes, answers, strict=True)
                ]
        except Exception:  # noqa: S110 - nothing committed: each write alone says what failed
            pass
        return [self._alone(write) for write in writes]

    def _after_cut_commit(self, write: Write[Any], answer: Any, error: Exception) -> Outcome:
        """The batch's COMMIT was cut off: it landed for every write or for none."""
        if write.idempotent:
            return self._alone(write)
        if write.committed is None:
            return False, error
        try:
            with self.engine.connect() as connection:
                landed = write.committed(connection)
        except Exception as failure:
            return False, failure
        return (True, answer) if landed else self._alone(write)

    def _alone(self, write: Write[Any]) -> Outcome:
        try:
            answer = self._transaction(
                self.engine, write.body, idempotent=write.idempotent, committed=write.committed
            )
        except Exception as error:
            return False, error
        self.transactions += 1
        return True, answer


def _settle(batch: list[tuple[Write[Any], asyncio.Future[Any]]], outcomes: list[Outcome]) -> None:
    for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
        if future.done():  # its caller was cancelled; the write was made all the same
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _result(outcome: Outcome) -> Any:
    ok, value = outcome
    if not ok:
        raise value
    return value
