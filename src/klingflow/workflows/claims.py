"""A node's claim on its one paid submission: the live intent it already has, or a new
one, reserved against the run's budget and recorded as `prepared`, in one transaction.

Every replay of a node claims first (a DBOS replay, a retry, a worker taking a run over):
a live intent means "do not submit again; resume it". Two processes may claim one node at
once (a worker replaying a run another still runs): the run log holds one live intent per
node (`uq_kf_intents_live`), so the second's INSERT waits for the first's COMMIT, records
nothing and answers the first's intent. A run with a budget locks its counters first, to
check the estimate fits; a run without one only adds to them as the transaction ends
(budget_tally.py), so workers running one batch do not queue behind each other's commits.
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
from klingflow.workflows.records import Intent, IntentState
from klingflow.workflows.schema import intents, run_budgets
from klingflow.workflows.transactions import Transactions

__all__ = ["INTENT_BY_ID", "NodeClaims"]

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
INTENT_BY_ID = intents.select().where(intents.c.intent_id == sa.bindparam("q_intent"))


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
        return connection.execute(INTENT_BY_ID, {"q_intent": intent_id}).first() is not None

    return committed


def _live_intent(run_id: str, epoch: int, node_path: str) -> Write[Intent | None]:
    params = {"q_run": run_id, "q_epoch": epoch, "q_path": node_path}

    def read(connection: sa.Connection) -> Intent | None:
        row = execute(connection, _LIVE_INTENT, params).first()
        return None if row is None else Intent.from_row(row)

    return Write(read, idempotent=True)


class NodeClaims(Transactions):
    """The intent journal's claims (workflows/intents.py builds the rest on them)."""

    def __init__(self, engine: sa.Engine, *, secrets: tuple[str, ...] = ()) -> None:
        super().__init__(engine, secrets=secrets)
        self._budgeted: dict[str, bool] = {}
        """Per run: whether it has a budget (`_has_budget`)."""

    def current_intent(self, run_id: str, epoch: int, node_path: str) -> Intent | None:
        """The node's live submission, if any. Rejected (nothing created), failed (the task is
        over: trying again means a new task) and abandoned intents do not count."""
        return self.write_now(_live_intent(run_id, epoch, node_path))

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
        """Reserve and record; with `live`, a live intent it reads is answered instead
        (the module says how two claims of one node are kept apart)."""
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
            other = (live or _live_intent(run_id, epoch, node_path).body)(tx)
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
        read = _live_intent(run_id, epoch, node_path).body
        # After a cut COMMIT: the new intent's row says whether it landed (a read alone wrote
        # nothing, so it is asked again).
        claim: Write[Intent | str | None] = self._reserve(
            run_id, epoch, node_path, request, estimated_usd, live=read
        )
        return await self.write_soon(claim)
