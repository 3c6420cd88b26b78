"""The persisted run log: runs, node executions, attempts and what runs spent.

DBOS keeps checkpoints; this log keeps what people and the UI ask about (what ran, with
which inputs, what failed and how often, what it cost). The one thing DBOS cannot give, a
record of each paid submission *before* it is sent, is the intent journal `RunLog` builds
on (workflows/intents.py). The tables are in workflows/schema.py, the records read from them
in workflows/records.py. Amounts are stored in PiAPI points (1 USD = 10,000,000) so budget
reservations are atomic integer updates.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Collection
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from klingflow.piapi.points import points_to_usd, usd_to_points
from klingflow.redaction import redact_values
from klingflow.workflows import budget_tally, node_writes
from klingflow.workflows.intents import IntentJournal
from klingflow.workflows.records import (
    TERMINAL_RUN_STATUSES,
    Attempt,
    NodeRun,
    NodeStatus,
    RunRecord,
    RunStatus,
    Spend,
)
from klingflow.workflows.runevents import RUN_LOGGER, log_run_event
from klingflow.workflows.schema import attempt_log, node_runs, run_budgets, runs, with_budget

__all__ = ["REUSED_STATUSES", "RunLog"]

REUSED_STATUSES = (NodeStatus.SUCCEEDED.value, NodeStatus.SKIPPED.value)
"""A node recorded with one of these is not run again in its epoch: a retry reuses it."""


_STATUSES = sa.select(runs.c.run_id, runs.c.status).where(
    runs.c.run_id.in_(sa.bindparam("q_runs", expanding=True))
)
"""The statuses of some runs (built once: building a statement costs more than running it)."""


class RunLog(IntentJournal):
    """Reads and writes the run log; every write is its own short transaction, run again
    when the database connection is cut (workflows/transactions.py), or in its `*_soon`
    form (a node's hot path) group-committed with others (workflows/group_commit.py)."""

    def __init__(self, engine: sa.Engine, *, secrets: tuple[str, ...] = ()) -> None:
        super().__init__(engine, secrets=secrets)
        self._node_upsert = node_writes.node_upsert(engine)

    # -- runs -------------------------------------------------------------------------------

    def create_run(
        self,
        *,
        workflow_name: str,
        workflow_hash: str,
        workflow: dict[str, Any],
        source_path: str | None,
        trigger: dict[str, Any],
        inputs: dict[str, Any],
        output_root: str,
        budget_usd: Decimal | None,
        idempotency_key: str | None = None,
    ) -> tuple[RunRecord, bool]:
        """A new queued run, or the existing run of `idempotency_key`: (run, created)."""
        if idempotency_key is not None:
            existing = self.find_by_key(idempotency_key)
            if existing is not None:
                return existing, False
        run_id = "run-" + uuid.uuid4().hex[:16]
        now = time.time()
        values = {
            "run_id": run_id,
            "idempotency_key": idempotency_key,
            "workflow_name": workflow_name,
            "workflow_hash": workflow_hash,
            "workflow": workflow,
            "source_path": source_path,
            "trigger": redact_values(trigger, self.secrets),
            "inputs": redact_values(inputs, self.secrets),  # as the trigger they come from
            "status": RunStatus.QUEUED.value,
            "epoch": 0,
            "output_dir": f"{output_root}/{run_id}",
            "created_at": now,
            "updated_at": now,
        }
        budget = {
            "run_id": run_id,
            "budget_points": None if budget_usd is None else usd_to_points(budget_usd),
            "reserved_points": 0,
            "spent_points": 0,
            "estimated_points": 0,
        }
        exists = sa.select(runs.c.run_id).where(runs.c.run_id == run_id)

        def insert(tx: sa.Connection) -> None:
            tx.execute(runs.insert(), values)
            tx.execute(run_budgets.insert(), budget)

        try:
            self.write(insert, committed=lambda c: c.execute(exists).first() is not None)
        except sa.exc.IntegrityError:
            if idempotency_key is None:
                raise
            existing = self.find_by_key(idempotency_key)
            assert existing is not None  # the conflicting insert was this key's run
            return existing, False
        run = self.get_run(run_id)
        assert run is not None
        return run, True

    def _run_where(self, condition: sa.ColumnElement[bool]) -> RunRecord | None:
        row = self.read(lambda c: c.execute(with_budget(runs).where(condition)).first())
        return RunRecord.from_row(row) if row else None

    def find_by_key(self, idempotency_key: str) -> RunRecord | None:
        """The run started with `idempotency_key`, if any (a trigger sent twice starts one)."""
        return self._run_where(runs.c.idempotency_key == idempotency_key)

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run `run_id`, or None when the log has no such run."""
        return self._run_where(runs.c.run_id == run_id)

    def run_statuses(self, run_ids: Collection[str]) -> dict[str, RunStatus]:
        """The status of each of `run_ids` the log has (a look that skips the run's record,
        whose trigger and inputs may hold a whole batch)."""
        params = {"q_runs": list(run_ids)}
        return self.read(
            lambda c: {row.run_id: RunStatus(row.status) for row in c.execute(_STATUSES, params)}
        )

    def run_ids_starting_with(self, prefix: str, *, limit: int = 5) -> list[str]:
        """Up to `limit` run ids that begin with `prefix`, newest first (unique-prefix lookup)."""
        query = (
            sa.select(runs.c.run_id)
            .where(runs.c.run_id.startswith(prefix, autoescape=True))
            .order_by(runs.c.created_at.desc())
            .limit(limit)
        )
        return self.read(lambda c: [row.run_id for row in c.execute(query)])

    def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow_name: str | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """The newest `limit` runs, in a status or of a workflow when given."""
        query = with_budget(runs).order_by(runs.c.created_at.desc()).limit(limit)
        if status is not None:
            query = query.where(runs.c.status == status.value)
        if workflow_name is not None:
            query = query.where(runs.c.workflow_name == workflow_name)
        return self.read(lambda c: [RunRecord.from_row(row) for row in c.execute(query)])

    def set_status(
        self,
        run_id: str,
        status: RunStatus,
        *,
        message: str | None = None,
        paused_node: str | None = None,
        outputs: Any = None,
    ) -> None:
        """Move the run to `status` (a terminal one stamps `finished_at`) and log the event."""
        now = time.time()
        values: dict[str, Any] = {
            "status": status.value,
            "message": self._clean(message),
            "paused_node": paused_node,
            "updated_at": now,
        }
        if status in TERMINAL_RUN_STATUSES:
            values["finished_at"] = now
        if outputs is not None:
            values["outputs"] = self._clean(outputs)
        statement = runs.update().where(runs.c.run_id == run_id).values(**values)
        self.write(lambda tx: tx.execute(statement), idempotent=True)
        if RUN_LOGGER.isEnabledFor(logging.INFO) and (record := self.get_run(run_id)):
            log_run_event(record)  # `klingflow worker` / `serve` log each start, pause, finish

    def _claim(self, run_id: str, status: RunStatus, **values: Any) -> bool:
        """Queue a run in `status` for a command in one atomic update: True if this call did.
        Not repeated after a cut COMMIT: a second try could not tell our claim from another's."""
        statement = (
            runs.update()
            .where(runs.c.run_id == run_id, runs.c.status == status.value)
            .values(status=RunStatus.QUEUED.value, paused_node=None, updated_at=time.time(),
                    **values)
        )  # fmt: skip
        return self.write(lambda tx: tx.execute(statement).rowcount == 1)

    def claim_paused(self, run_id: str, *, message: str) -> bool:
        """Queue a paused run for a command, unless another command (from any process)
        claimed it first: one atomic update, so two Retry clicks send one command."""
        return self._claim(run_id, RunStatus.PAUSED, message=message)

    def claim_crashed(self, run_id: str, *, message: str) -> bool:
        """Queue a crashed run to be run again (a crash is a pause we could not write),
        unless another command claimed it first: one atomic update, as `claim_paused`."""
        return self._claim(run_id, RunStatus.CRASHED, message=message, finished_at=None)

    def new_epoch(self, run_id: str) -> int:
        """Start the run over (retry --from-start): earlier node results are kept, unused."""

        def advance(tx: sa.Connection) -> int:
            tx.execute(
                runs.update()
                .where(runs.c.run_id == run_id)
                .values(epoch=runs.c.epoch + 1, updated_at=time.time())
            )
            epoch: int = tx.execute(
                sa.select(runs.c.epoch).where(runs.c.run_id == run_id)
            ).scalar_one()
            return epoch

        return self.write(advance)

    # -- budget -----------------------------------------------------------------------------

    def settle(self, run_id: str, *, reserved_usd: Decimal, spent_usd: Decimal) -> None:
        """Release a reservation and record what was really charged."""
        reserved, spent = usd_to_points(reserved_usd), usd_to_points(spent_usd)
        self.write(lambda tx: budget_tally.add(tx, run_id, reserved=-reserved, spent=spent))

    # -- nodes ------------------------------------------------------------------------------

    def node_started(
        self,
        run_id: str,
        epoch: int,
        node_path: str,
        *,
        node_id: str,
        node_type: str,
        item_index: int | None,
        inputs: Any,
    ) -> None:
        """The node's row, new or restarted (`running`, no error): a replay writes it again."""
        self.write_now(
            node_writes.started(self._node_upsert, self._clean, run_id, epoch, node_path,
                                node_id, node_type, item_index, inputs)
        )  # fmt: skip

    async def node_started_soon(
        self,
        run_id: str,
        epoch: int,
        node_path: str,
        *,
        node_id: str,
        node_type: str,
        item_index: int | None,
        inputs: Any,
    ) -> None:
        """`node_started`, committed with the writes queued now (group commit)."""
        await self.write_soon(
            node_writes.started(self._node_upsert, self._clean, run_id, epoch, node_path,
                                node_id, node_type, item_index, inputs)
        )  # fmt: skip

    def node_finished(
        self,
        run_id: str,
        epoch: int,
        node_path: str,
        *,
        status: NodeStatus,
        output: Any = None,
        error: dict[str, Any] | None = None,
        attempts: int | None = None,
        task_id: str | None = None,
        cost_usd: Decimal | None = None,
        attempt: tuple[int, float] | None = None,
    ) -> None:
        """The node's outcome; with `attempt` (number, started_at), its last attempt too,
        in the same transaction (one write per finished node on the hot path)."""
        self.write_now(
            node_writes.finished(self._clean, run_id, epoch, node_path, status, output, error,
                                 attempts, task_id, cost_usd, attempt)
        )  # fmt: skip

    async def node_finished_soon(
        self,
        run_id: str,
        epoch: int,
        node_path: str,
        *,
        status: NodeStatus,
        output: Any = None,
        error: dict[str, Any] | None = None,
        task_id: str | None = None,
        cost_usd: Decimal | None = None,
        attempt: tuple[int, float] | None = None,
    ) -> None:
        """`node_finished`, committed with the writes queued now (group commit)."""
        await self.write_soon(
            node_writes.finished(self._clean, run_id, epoch, node_path, status, output, error,
                                 None, task_id, cost_usd, attempt)
        )  # fmt: skip

    def finished_nodes(
        self, run_id: str, epoch: int, *, item_indices: Collection[int] | None = None
    ) -> dict[str, NodeRun]:
        """Succeeded or skipped nodes of this epoch, by path: what a retry reuses. A loop's
        chunk asks for its own items only (the run may have 100,000: reading them all in
        every chunk made a batch quadratic)."""
        query = node_runs.select().where(
            node_runs.c.run_id == run_id,
            node_runs.c.epoch == epoch,
            node_runs.c.status.in_(REUSED_STATUSES),
        )
        if item_indices is not None:
            query = query.where(node_runs.c.item_index.in_(list(item_indices)))
        return {n.node_path: n for n in self.node_runs(query.order_by(node_runs.c.id))}

    def add_attempt(
        self,
        run_id: str,
        epoch: int,
        node_path: str,
        *,
        number: int,
        started_at: float,
        error: dict[str, Any] | None,
        retry_in_seconds: float | None,
    ) -> None:
        """A failed attempt that will be retried, counted on its node."""
        self.write_now(node_writes.failed_attempt(self._clean, run_id, epoch, node_path, number,
                                                  started_at, error, retry_in_seconds))  # fmt: skip

    async def add_attempt_soon(
        self,
        run_id: str,
        epoch: int,
        node_path: str,
        *,
        number: int,
        started_at: float,
        error: dict[str, Any] | None,
        retry_in_seconds: float | None,
    ) -> None:
        """`add_attempt`, committed with the writes queued now (group commit)."""
        await self.write_soon(node_writes.failed_attempt(
            self._clean, run_id, epoch, node_path, number, started_at, error, retry_in_seconds
        ))  # fmt: skip

    # -- reads: nodes, attempts, summaries (dashboard, /api/spend, /api/tasks) ---------------

    def nodes(self, run_id: str, epoch: int | None = None) -> list[NodeRun]:
        """The run's node executions in the order they started (of one epoch, when given)."""
        query = node_runs.select().where(node_runs.c.run_id == run_id)
        if epoch is not None:
            query = query.where(node_runs.c.epoch == epoch)
        return self.node_runs(query.order_by(node_runs.c.id))

    def node_runs(self, query: sa.Select[Any]) -> list[NodeRun]:
        """The node executions a query over `kf_node_runs` selects (loop items, failures)."""
        return self.read(lambda c: [NodeRun.from_row(row) for row in c.execute(query)])

    def attempts(self, run_id: str, *, epoch: int | None = None) -> list[Attempt]:
        """Every attempt of the run's nodes in order (of one epoch, when given)."""
        query = attempt_log.select().where(attempt_log.c.run_id == run_id)
        if epoch is not None:
            query = query.where(attempt_log.c.epoch == epoch)
        return self.attempt_rows(query.order_by(attempt_log.c.id))

    def attempt_rows(self, query: sa.Select[Any]) -> list[Attempt]:
        """The attempts a query over `kf_attempts` selects."""
        return self.read(lambda c: [Attempt.from_row(row) for row in c.execute(query)])

    def status_counts(self, *, workflow_name: str | None = None) -> dict[RunStatus, int]:
        """How many runs are in each status (every status present, zeros included)."""
        query = sa.select(runs.c.status, sa.func.count()).group_by(runs.c.status)
        if workflow_name is not None:
            query = query.where(runs.c.workflow_name == workflow_name)
        counted = self.read(lambda c: {RunStatus(s): n for s, n in c.execute(query)})
        return {status: counted.get(status, 0) for status in RunStatus}

    def spend(self, since: float) -> Spend:
        """Charged and reserved amounts, summed in the database (runs counted by start)."""
        recent = runs.c.created_at >= since
        spent, reserved = run_budgets.c.spent_points, run_budgets.c.reserved_points
        query = sa.select(
            sa.func.coalesce(sa.func.sum(spent), 0),
            sa.func.coalesce(sa.func.sum(sa.case((recent, spent), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(reserved), 0),
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(sa.case((recent, 1), else_=0)), 0),
        ).join_from(runs, run_budgets)
        total, today, reserved, count, count_today = self.read(lambda c: c.execute(query).one())
        return Spend(
            since=since,
            today_usd=points_to_usd(int(today)),
            total_usd=points_to_usd(int(total)),
            reserved_usd=points_to_usd(int(reserved)),
            runs_today=int(count_today),
            runs_total=int(count),
        )
