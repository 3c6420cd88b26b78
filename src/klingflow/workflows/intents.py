"""The paid-exactly-once journal: every PiAPI submission recorded *before* it is sent.

DBOS replays a step that was cut short, and a create POST cannot be undone: so the journal,
not the replay, decides whether a node submits. Its life, per submission:

- `reserve_and_record`: the estimate is reserved against the run's budget and the intent
  written as `prepared`, in one transaction, before the create waits behind the client's
  limits; nothing was sent, so a crash here resubmits safely.
- `mark_sent`: the POST leaves now; from here a crash leaves the intent `sent`, and only a
  `sent` intent can have made a task nobody heard of.
- `accept_intent`: PiAPI answered with a task id, bound once to this intent and its node
  (never to two runs: `TaskIdConflictError`).
- `finish_intent`: the task ended; the reservation becomes what PiAPI charged, once.
- `mark_uncertain`: the POST got no answer; a person (or PiAPI's webhook) settles it.
- `abandon_intent` / `settle_abandoned`: a person resubmitted over an uncertain intent; its
  estimate stays reserved until a webhook names its task and says what it cost.

`current_intent` is what a node asks first, on every replay: a live intent means "do not
submit again; resume it" (on the hot path, in the transaction that otherwise records the new
intent: `live_or_reserve_soon`). Amounts are PiAPI points (integers), so reservations are atomic.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from klingflow.errors import WorkflowError
from klingflow.piapi.points import usd_to_points
from klingflow.workflows import budget_tally
from klingflow.workflows.group_commit import Write
from klingflow.workflows.prepared import execute
from klingflow.workflows.records import (
    ACTIVE_INTENT_STATES,
    TERMINAL_RUN_STATUSES,
    Intent,
    IntentState,
    Submission,
)
from klingflow.workflows.rescued_tasks import RescuedTasks
from klingflow.workflows.schema import intents, node_runs, run_budgets, runs
from klingflow.workflows.transactions import Transactions

__all__ = ["IntentJournal", "TaskIdConflictError"]


class TaskIdConflictError(WorkflowError):
    """PiAPI answered a submission with a task id the run log holds for another one.

    Kept next to the intent journal it protects; never retried (retrying cannot change
    which run owns the id).
    """


# -- the hot path's statements, built once: building a statement costs more than running it
# (docs/benchmarks-history.md). WHERE parameters are `q_*`; SET values are passed by column name.

NODE_UPDATE = (
    node_runs.update()
    .where(node_runs.c.run_id == sa.bindparam("q_run"))
    .where(node_runs.c.epoch == sa.bindparam("q_epoch"))
    .where(node_runs.c.node_path == sa.bindparam("q_path"))
)
"""Set columns of one node's row (the run log's node writes use it too)."""
_LIVE_INTENT = (
    intents.select()
    .where(intents.c.run_id == sa.bindparam("q_run"))
    .where(intents.c.epoch == sa.bindparam("q_epoch"))
    .where(intents.c.node_path == sa.bindparam("q_path"))
    .where(
        intents.c.state.notin_(
            [s.value for s in (IntentState.REJECTED, IntentState.FAILED, IntentState.ABANDONED)]
        )
    )
    .order_by(intents.c.created_at.desc())
    .limit(1)
)
_INTENT_BY_ID = intents.select().where(intents.c.intent_id == sa.bindparam("q_intent"))
_INTENT_BY_TASK = intents.select().where(intents.c.task_id == sa.bindparam("q_task"))
_INTENT_UPDATE = intents.update().where(intents.c.intent_id == sa.bindparam("q_intent"))


@functools.cache
def _insert_unless_live(dialect: str) -> Any:
    """INSERT an intent, or nothing when its node has a live one (`uq_kf_intents_live`):
    on Postgres it waits for a claim of the same node in flight, then does nothing if that
    one committed, so two processes never both record (and send) a node's submission."""
    # Imported here: the Postgres dialect costs a reader of a SQLite run log ~0.1 s at start.
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(intents).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(intents).on_conflict_do_nothing()


_MARK_SENT = _INTENT_UPDATE.where(intents.c.state == IntentState.PREPARED.value).values(
    state=IntentState.SENT.value
)
_OTHER_OWNER = (
    intents.select()
    .where(intents.c.task_id == sa.bindparam("q_task"))
    .where(intents.c.intent_id != sa.bindparam("q_intent"))
)
"""The intent, other than `q_intent`, that holds task `q_task` (a conflict)."""
_other = intents.alias("other")  # not correlated with the row being updated
_BIND_TASK = _INTENT_UPDATE.where(
    ~sa.exists()
    .where(_other.c.task_id == sa.bindparam("q_task"))
    .where(_other.c.intent_id != sa.bindparam("q_intent"))
).values(state=IntentState.ACCEPTED.value)
"""Bind a task id to an intent unless another intent holds it: the conflict check and the
write in one statement (the hot path's), the owner read only when it did not land."""
_CLOSE_ACCEPTED = (
    intents.update()
    .where(intents.c.task_id == sa.bindparam("q_task"))
    .where(intents.c.state == IntentState.ACCEPTED.value)
    .returning(intents.c.run_id, intents.c.estimated_points)
)
"""Close the accepted intent of a task, answering what its settlement needs (one statement
where a read and an update were)."""
_budget = run_budgets.c
_BUDGETS_KNOWN = 10_000
"""Runs whose having a budget a journal remembers, at most."""
_BUDGET = sa.select(_budget.budget_points).where(_budget.run_id == sa.bindparam("q_run"))
_RESERVE = (
    run_budgets.update()
    .where(_budget.run_id == sa.bindparam("q_run"))
    .where(
        sa.or_(
            _budget.budget_points.is_(None),
            _budget.spent_points + _budget.reserved_points + sa.bindparam("q_points")
            <= _budget.budget_points,
        )
    )
    .values(
        reserved_points=_budget.reserved_points + sa.bindparam("q_points"),
        estimated_points=_budget.estimated_points + sa.bindparam("q_points"),
    )
)


def _has_intent(intent_id: str) -> Any:
    """A `committed` check (see `Transactions.write`): the intent's row exists."""

    def committed(connection: sa.Connection) -> bool:
        return connection.execute(_INTENT_BY_ID, {"q_intent": intent_id}).first() is not None

    return committed


def _current_intent(run_id: str, epoch: int, node_path: str) -> Write[Intent | None]:
    params = {"q_run": run_id, "q_epoch": epoch, "q_path": node_path}

    def read(connection: sa.Connection) -> Intent | None:
        row = execute(connection, _LIVE_INTENT, params).first()
        return None if row is None else Intent.from_row(row)

    return Write(read, idempotent=True)


def _mark_sent(intent_id: str) -> Write[bool]:
    params = {"q_intent": intent_id, "updated_at": time.time()}
    return Write(lambda tx: execute(tx, _MARK_SENT, params).rowcount == 1, idempotent=True)


def _accept(
    intent_id: str, run_id: str, epoch: int, node_path: str, task_id: str
) -> Write[TaskIdConflictError | None]:
    """Bind `task_id` to the intent and its node; the conflict, when another intent has it."""
    now = time.time()

    def bind(tx: sa.Connection) -> TaskIdConflictError | None:
        bound = execute(
            tx,
            _BIND_TASK,
            {"q_intent": intent_id, "q_task": task_id, "task_id": task_id, "updated_at": now},
        )
        owner = None  # bound: nobody else holds it; else read who does (or nobody: no intent)
        if bound.rowcount != 1:
            owner = tx.execute(_OTHER_OWNER, {"q_task": task_id, "q_intent": intent_id}).first()
        if owner is not None:
            return TaskIdConflictError(
                f"PiAPI answered node {node_path} of run {run_id} (intent {intent_id}) with "
                f"task {task_id}, which the run log already holds for run {owner.run_id} "
                f"(intent {owner.intent_id}, node {owner.node_path}); klingflow will not book "
                "one task on two runs: check the task at PiAPI, then settle this run with "
                f"`klingflow runs retry {run_id} --task-id ID` or `--resubmit`"
            )
        execute(
            tx,
            NODE_UPDATE,
            {"q_run": run_id, "q_epoch": epoch, "q_path": node_path, "task_id": task_id},
        )
        return None

    # Done twice, the second finds the task bound to this very intent: idempotent.
    return Write(bind, idempotent=True)


def _finish(task_id: str, state: IntentState, spent_points: int) -> Write[bool]:
    """Close an accepted intent and settle its reservation; False when it was not accepted."""
    now = time.time()

    def finish(tx: sa.Connection) -> bool:
        closed = {"q_task": task_id, "state": state.value, "updated_at": now}
        row = execute(tx, _CLOSE_ACCEPTED, closed).first()
        if row is None:
            return False
        budget_tally.add(tx, row.run_id, reserved=-row.estimated_points, spent=spent_points)
        return True

    def committed(c: sa.Connection) -> bool:  # our COMMIT landed: it carries our moment
        row = c.execute(_INTENT_BY_TASK, {"q_task": task_id}).first()
        return row is not None and row.state == state.value and row.updated_at == now

    return Write(finish, committed=committed)


class IntentJournal(Transactions):
    """Reads and writes `kf_intents` (and the budget reservations that go with them); every
    write is one short transaction, or, in its `*_soon` form on the hot path, shares one with
    the writes queued at the same time (group_commit.py). `RunLog` is one, with the runs and
    nodes besides."""

    rescued: RescuedTasks | None = None
    """Where a task id is kept when its record is refused (an executing engine on SQLite
    sets it: workflows/rescued_tasks.py)."""

    def __init__(self, engine: sa.Engine, *, secrets: tuple[str, ...] = ()) -> None:
        super().__init__(engine, secrets=secrets)
        self._budgeted: dict[str, bool] = {}
        """Per run: whether it has a budget (`_has_budget`)."""

    def current_intent(self, run_id: str, epoch: int, node_path: str) -> Intent | None:
        """The node's live submission, if any. Rejected (nothing created), failed (the task is
        over: trying again means a new task) and abandoned intents do not count."""
        return self.write_now(_current_intent(run_id, epoch, node_path))

    def reserve_and_record(
        self,
        run_id: str,
        epoch: int,
        node_path: str,
        *,
        request: dict[str, Any],
        estimated_usd: Decimal,
    ) -> str | None:
        """Reserve the estimate and write the intent (`prepared`), atomically; None when
        over budget. Written before the create waits for the client's limits: from then on a
        crash cannot lose it. `mark_sent` says when it really leaves.
        """
        write: Write[str | None] = self._reserve(run_id, epoch, node_path, request, estimated_usd)
        return self.write_now(write)

    def _reserve(
        self,
        run_id: str,
        epoch: int,
        node_path: str,
        request: dict[str, Any],
        estimated_usd: Decimal,
        *,
        live: Callable[[sa.Connection], Intent | None] | None = None,
    ) -> Write[Any]:
        """Reserve and record; with `live`, a live intent it reads is answered instead.

        Two processes may claim one node at once (a worker replaying a run another still
        runs): the node's one live intent (`uq_kf_intents_live`) makes the second's INSERT
        wait for the first's COMMIT, then do nothing, and the second answers the first's
        intent. A run with a budget locks its counters first, to check the estimate fits; a
        run without one only adds to them as the transaction ends (budget_tally.py), so
        workers running one batch do not queue behind each other's group commits."""
        points = usd_to_points(estimated_usd)
        intent_id = uuid.uuid4().hex
        now = time.time()
        row = {
            "intent_id": intent_id, "run_id": run_id, "epoch": epoch,
            "node_path": node_path, "state": IntentState.PREPARED.value,
            "request": self._clean(request), "estimated_points": points,
            "created_at": now, "updated_at": now,
        }  # fmt: skip

        def record(tx: sa.Connection) -> Intent | str | None:
            budgeted = self._has_budget(tx, run_id)
            reserved = 0
            if budgeted:
                budget_tally.send(tx, run_id)  # what this transaction settled counts first
                reserved = execute(tx, _RESERVE, {"q_run": run_id, "q_points": points}).rowcount
            if live is not None and (found := live(tx)) is not None:
                give_back(tx, reserved)
                return found
            if budgeted and not reserved:
                return None
            if execute(tx, _insert_unless_live(tx.dialect.name), row).rowcount == 1:
                if not budgeted:
                    budget_tally.add(tx, run_id, reserved=points, estimated=points)
                return intent_id
            give_back(tx, reserved)  # the node's intent was recorded by another process
            other = (live or _current_intent(run_id, epoch, node_path).body)(tx)
            if live is None or other is None:
                raise WorkflowError(
                    f"node {node_path} of run {run_id} already has a live submission"
                    + ("" if other is None else f" (intent {other.intent_id})")
                    + "; klingflow records one per node, so none was recorded"
                )
            return other

        def give_back(tx: sa.Connection, reserved: int) -> None:
            if reserved:
                budget_tally.add(tx, run_id, reserved=-points, estimated=-points)

        return Write(record, committed=_has_intent(intent_id))

    def _has_budget(self, connection: sa.Connection, run_id: str) -> bool:
        """Whether the run has a budget (set when it was created; never changed), asked once."""
        known = self._budgeted.get(run_id)
        if known is None:
            answer = execute(connection, _BUDGET, {"q_run": run_id}).first()
            known = answer is not None and answer.budget_points is not None
            if answer is not None:
                if len(self._budgeted) >= _BUDGETS_KNOWN:  # a long-lived service's runs
                    self._budgeted.clear()
                self._budgeted[run_id] = known
        return known

    async def live_or_reserve_soon(
        self,
        run_id: str,
        epoch: int,
        node_path: str,
        *,
        request: dict[str, Any],
        estimated_usd: Decimal,
    ) -> Intent | str | None:
        """The node's live submission (`current_intent`) if it has one; else what
        `reserve_and_record` answers (the new intent's id, None when over budget). One
        transaction where the hot path paid two: a node's first question and its first write."""
        read = _current_intent(run_id, epoch, node_path).body
        # After a cut COMMIT: the new intent's row says whether it landed (a read alone wrote
        # nothing, so it is asked again).
        claim: Write[Intent | str | None] = self._reserve(
            run_id, epoch, node_path, request, estimated_usd, live=read
        )
        return await self.write_soon(claim)

    def mark_sent(self, intent_id: str) -> bool:
        """The create POST is leaving now: from here a crash leaves it uncertain. False when
        the intent was no longer `prepared`: another process sent it (a worker taking over
        one still alive), and this one must not. (After a cut COMMIT it may say False for
        its own: then nothing is sent and the run pauses, never a second charge.)"""
        return self.write_now(_mark_sent(intent_id))

    async def mark_sent_soon(self, intent_id: str) -> bool:
        """`mark_sent`, committed with the writes queued now (group commit): on Postgres the
        event loop does not wait on its round trips, and it has landed when this returns."""
        return await self.write_soon(_mark_sent(intent_id))

    def accept_intent(
        self, intent_id: str, *, run_id: str, epoch: int, node_path: str, task_id: str
    ) -> None:
        """PiAPI took the submission: keep its task id, on the intent and the node.

        A task id already bound to another intent (an emulator replaying its ids, a proxy
        answering from a cache) is never merged: that would book this submission's cost on
        the other run. The intent becomes uncertain and `TaskIdConflictError` names both runs.
        """
        write = _accept(intent_id, run_id, epoch, node_path, task_id)
        self._raise_conflict(intent_id, self.write_now(write))

    async def accept_intent_soon(
        self, intent_id: str, *, run_id: str, epoch: int, node_path: str, task_id: str
    ) -> None:
        """`accept_intent`, committed with the writes queued now (group commit)."""
        write = _accept(intent_id, run_id, epoch, node_path, task_id)
        self._raise_conflict(intent_id, await self.write_soon(write))

    def _raise_conflict(self, intent_id: str, conflict: TaskIdConflictError | None) -> None:
        if conflict is not None:
            self.update_intent(intent_id, IntentState.UNCERTAIN, note=str(conflict))
            raise conflict

    def update_intent(
        self,
        intent_id: str,
        state: IntentState,
        *,
        task_id: str | None = None,
        note: str | None = None,
    ) -> None:
        """Set an intent's state (and task id or note) outright: repeating it changes nothing."""
        values: dict[str, Any] = {"state": state.value, "updated_at": time.time()}
        if task_id is not None:
            values["task_id"] = task_id
        if note is not None:
            values["note"] = self._clean(note)
        statement = intents.update().where(intents.c.intent_id == intent_id).values(**values)
        self.write(lambda tx: tx.execute(statement), idempotent=True)

    def intents(
        self, run_id: str, *, epoch: int | None = None, limit: int | None = None
    ) -> list[Intent]:
        """The run's submissions, oldest first (the first `limit`, when given)."""
        query = intents.select().where(intents.c.run_id == run_id)
        if epoch is not None:
            query = query.where(intents.c.epoch == epoch)
        query = query.order_by(intents.c.created_at).limit(limit)
        return self.read(lambda c: [Intent.from_row(row) for row in c.execute(query)])

    def _intent_row(self, statement: sa.Select[Any], params: dict[str, str]) -> Any:
        return self.read(lambda c: c.execute(statement, params).first())

    def intent_for_task(self, task_id: str) -> tuple[str, Intent] | None:
        """(run_id, intent) of the submission that created `task_id`."""
        row = self._intent_row(_INTENT_BY_TASK, {"q_task": task_id})
        return None if row is None else (row.run_id, Intent.from_row(row))

    def intent_by_id(self, intent_id: str) -> tuple[str, Intent] | None:
        """(run_id, intent) for a webhook that names an intent."""
        row = self._intent_row(_INTENT_BY_ID, {"q_intent": intent_id})
        return None if row is None else (row.run_id, Intent.from_row(row))

    def intent_request(self, intent_id: str) -> dict[str, Any]:
        """The create body an intent recorded (secrets masked), to match a task against."""
        query = sa.select(intents.c.request).where(intents.c.intent_id == intent_id)
        request: dict[str, Any] = self.read(lambda c: c.execute(query).scalar_one())
        return request

    def finish_intent(self, task_id: str, state: IntentState, *, spent_points: int) -> bool:
        """Close an accepted submission and settle its reservation, once (False if done)."""
        return self.write_now(_finish(task_id, state, spent_points))

    async def finish_intent_soon(
        self, task_id: str, state: IntentState, *, spent_points: int
    ) -> bool:
        """`finish_intent`, committed with the writes queued now (group commit)."""
        return await self.write_soon(_finish(task_id, state, spent_points))

    def mark_uncertain(self, intent_id: str, *, note: str) -> str | None:
        """A sent submission got no answer: mark it uncertain, unless a webhook already
        named its task, whose id is then returned."""
        statement = (
            intents.update()
            .where(intents.c.intent_id == intent_id)
            .where(intents.c.state == IntentState.SENT.value)
            .values(state=IntentState.UNCERTAIN.value, note=self._clean(note),
                    updated_at=time.time())
        )  # fmt: skip

        def mark(tx: sa.Connection) -> Any:
            tx.execute(statement)
            return tx.execute(_INTENT_BY_ID, {"q_intent": intent_id}).first()

        row = self.write(mark, idempotent=True)
        return row.task_id if row is not None and row.state == IntentState.ACCEPTED.value else None

    def abandon_intent(self, intent_id: str, *, note: str) -> None:
        """Give up on an uncertain submission (the node submits again). Whether it made a
        task is unknown, so its estimate stays reserved, not spent: spent is only what PiAPI
        charged. PiAPI's webhook, if one comes, settles it (`settle_abandoned`)."""
        statement = (
            intents.update()
            .where(intents.c.intent_id == intent_id)
            .where(intents.c.state == IntentState.UNCERTAIN.value)
            .values(state=IntentState.ABANDONED.value, note=note, updated_at=time.time())
        )
        self.write(lambda tx: tx.execute(statement), idempotent=True)

    def settle_abandoned(self, intent_id: str, *, task_id: str, spent_points: int) -> bool:
        """An abandoned submission did make `task_id`, which ended costing `spent_points`:
        its reservation becomes what it cost, once (False if already settled)."""

        def settle(tx: sa.Connection) -> bool:
            settled = tx.execute(
                intents.update()
                .where(intents.c.intent_id == intent_id)
                .where(intents.c.state == IntentState.ABANDONED.value)
                .where(intents.c.task_id.is_(None))
                .values(task_id=task_id, note="resubmitted over; PiAPI's webhook named its task")
            )
            if settled.rowcount != 1:
                return False
            row = tx.execute(_INTENT_BY_ID, {"q_intent": intent_id}).one()
            budget_tally.add(tx, row.run_id, reserved=-row.estimated_points, spent=spent_points)
            return True

        def committed(c: sa.Connection) -> bool:
            row = c.execute(_INTENT_BY_ID, {"q_intent": intent_id}).first()
            return row is not None and row.task_id == task_id

        return self.write(settle, committed=committed)

    def submissions(
        self, *, run_id: str | None = None, active_only: bool = False, limit: int = 50
    ) -> list[Submission]:
        """Paid submissions, newest first, with their run's workflow name."""
        query = (
            sa.select(intents, runs.c.workflow_name)
            .join(runs, runs.c.run_id == intents.c.run_id)
            .order_by(intents.c.created_at.desc())
            .limit(limit)
        )
        if run_id is not None:
            query = query.where(intents.c.run_id == run_id)
        if active_only:  # in flight: an unsettled submission of a run that may still settle it
            query = query.where(
                intents.c.state.in_([s.value for s in ACTIVE_INTENT_STATES]),
                runs.c.status.notin_([s.value for s in TERMINAL_RUN_STATUSES]),
            )
        return self.read(
            lambda c: [
                Submission(
                    run_id=row.run_id, workflow_name=row.workflow_name, intent=Intent.from_row(row)
                )
                for row in c.execute(query)
            ]
        )
