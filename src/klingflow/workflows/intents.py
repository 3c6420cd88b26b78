"""The paid-exactly-once journal: every PiAPI submission recorded *before* it is sent.

DBOS replays a step that was cut short, and a create POST cannot be undone: so the journal,
not the replay, decides whether a node submits. Its life, per submission:

- `reserve_and_record` (workflows/claims.py): the estimate is reserved against the run's
  budget and the intent written as `prepared`, in one transaction, before the create waits
  behind the client's limits; nothing was sent, so a crash here resubmits safely.
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

import time
from typing import Any

import sqlalchemy as sa

from klingflow.errors import WorkflowError
from klingflow.workflows import budget_tally
from klingflow.workflows.claims import INTENT_BY_ID, NodeClaims
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
from klingflow.workflows.schema import intents, node_runs, runs

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
_INTENT_BY_TASK = intents.select().where(intents.c.task_id == sa.bindparam("q_task"))
_INTENT_UPDATE = intents.update().where(intents.c.intent_id == sa.bindparam("q_intent"))


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


class IntentJournal(NodeClaims):
    """Reads and writes `kf_intents` (and the budget reservations that go with them); every
    write is one short transaction, or, in its `*_soon` form on the hot path, shares one with
    the writes queued at the same time (group_commit.py). `RunLog` is one, with the runs and
    nodes besides."""

    rescued: RescuedTasks | None = None
    """Where a task id is kept when its record is refused (an executing engine on SQLite
    sets it: workflows/rescued_tasks.py)."""

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
        row = self._intent_row(INTENT_BY_ID, {"q_intent": intent_id})
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
            return tx.execute(INTENT_BY_ID, {"q_intent": intent_id}).first()

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
            row = tx.execute(INTENT_BY_ID, {"q_intent": intent_id}).one()
            budget_tally.add(tx, row.run_id, reserved=-row.estimated_points, spent=spent_points)
            return True

        def committed(c: sa.Connection) -> bool:
            row = c.execute(INTENT_BY_ID, {"q_intent": intent_id}).first()
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
