"""The persisted run log: runs, node executions, attempts and PiAPI submission intents.

DBOS keeps checkpoints; this log keeps what people and the UI ask about (what ran, with
which inputs, what failed and how often, what it cost), and the one thing DBOS cannot give:
a record of each paid submission *before* it is sent. Amounts are stored in PiAPI points
(1 USD = 10,000,000) so budget reservations are atomic integer updates.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from decimal import Decimal
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from klingflow.errors import WorkflowError
from klingflow.formats import json_values
from klingflow.piapi.models import points_to_usd, usd_to_points
from klingflow.workflows.runevents import RUN_LOGGER, log_run_event
from klingflow.workflows.schema import create_tables

__all__ = [
    "Attempt",
    "Intent",
    "IntentState",
    "NodeRun",
    "NodeStatus",
    "RunLog",
    "RunRecord",
    "RunStatus",
    "Spend",
    "Submission",
    "TaskIdConflictError",
    "redact",
    "redact_values",
    "storable",
]

metadata = sa.MetaData()

runs = sa.Table(
    "kf_runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("idempotency_key", sa.String(255), unique=True, nullable=True),
    sa.Column("workflow_name", sa.String(128), nullable=False, index=True),
    sa.Column("workflow_hash", sa.String(64), nullable=False),
    sa.Column("workflow", sa.JSON, nullable=False),
    sa.Column("source_path", sa.Text, nullable=True),
    sa.Column("trigger", sa.JSON, nullable=False),
    sa.Column("inputs", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("paused_node", sa.String(255), nullable=True),
    sa.Column("epoch", sa.Integer, nullable=False, default=0),
    sa.Column("outputs", sa.JSON, nullable=True),
    sa.Column("output_dir", sa.Text, nullable=False),
    sa.Column("budget_points", sa.BigInteger, nullable=True),
    sa.Column("reserved_points", sa.BigInteger, nullable=False, default=0),
    sa.Column("spent_points", sa.BigInteger, nullable=False, default=0),
    sa.Column("estimated_points", sa.BigInteger, nullable=False, default=0),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float, nullable=True),
)

node_runs = sa.Table(
    "kf_node_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), sa.ForeignKey("kf_runs.run_id"), nullable=False),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("node_path", sa.String(255), nullable=False),
    sa.Column("node_id", sa.String(64), nullable=False),
    sa.Column("node_type", sa.String(64), nullable=False),
    sa.Column("item_index", sa.Integer, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("inputs", sa.JSON, nullable=True),
    sa.Column("output", sa.JSON, nullable=True),
    sa.Column("error", sa.JSON, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("task_id", sa.String(64), nullable=True),
    sa.Column("cost_points", sa.BigInteger, nullable=True),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.UniqueConstraint("run_id", "epoch", "node_path"),
)

attempt_log = sa.Table(
    "kf_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), sa.ForeignKey("kf_runs.run_id"), nullable=False),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("node_path", sa.String(255), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float, nullable=False),
    sa.Column("error", sa.JSON, nullable=True),
    sa.Column("retry_in_seconds", sa.Float, nullable=True),
    sa.Index("ix_kf_attempts_node", "run_id", "epoch", "node_path"),
)

intents = sa.Table(
    "kf_intents",
    metadata,
    sa.Column("intent_id", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(64), sa.ForeignKey("kf_runs.run_id"), nullable=False),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("node_path", sa.String(255), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("task_id", sa.String(64), nullable=True, index=True),
    sa.Column("request", sa.JSON, nullable=False),
    sa.Column("estimated_points", sa.BigInteger, nullable=False),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Index("ix_kf_intents_node", "run_id", "epoch", "node_path"),
)


class TaskIdConflictError(WorkflowError):
    """PiAPI answered a submission with a task id the run log holds for another one.

    Kept next to the intent journal it protects; never retried (retrying cannot change
    which run owns the id).
    """


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    CRASHED = "crashed"


TERMINAL_RUN_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.CANCELLED, RunStatus.CRASHED})


class NodeStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class IntentState(StrEnum):
    """A paid submission's state.

    `prepared` is written (with the budget reservation) before the create waits behind the
    client's own concurrency and rate limits; `sent` at the last moment before the POST
    leaves. So after a crash a `prepared` intent was provably never sent (it is sent then,
    by itself), and only a `sent` one can have created a task nobody heard of.
    """

    PREPARED = "prepared"
    SENT = "sent"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    UNCERTAIN = "uncertain"
    COMPLETED = "completed"
    FAILED = "failed"
    ABANDONED = "abandoned"


_SECRET_NAME = re.compile(
    r"(secret|token|password|passwd|authorization|cookie|(^|[-_])key$|api[-_]?key)", re.I
)


def storable(text: str) -> str:
    """`text` as every database and JSON encoder takes it: a lone surrogate becomes `?` and
    NUL becomes U+FFFD (an answer from an HTTP endpoint or a chat model may hold either;
    stored raw, it would break Postgres writes and every later listing)."""
    if text.isascii() and "\x00" not in text:
        return text
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def redact_values(value: Any, secrets: tuple[str, ...]) -> Any:
    """A copy of `value` with known secret strings masked wherever they appear, and every
    string (keys too) made storable."""
    if isinstance(value, Mapping):
        return {
            storable(k) if isinstance(k, str) else k: redact_values(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_values(v, secrets) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "***")
        return storable(value)
    return value


def redact(value: Any, secrets: tuple[str, ...] = ()) -> Any:
    """A copy of `value` with secret-looking keys' values and known secret strings masked."""
    if isinstance(value, Mapping):
        return {
            storable(k) if isinstance(k, str) else k: (
                "***" if _SECRET_NAME.search(str(k)) and v else redact(v, secrets)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, secrets) for v in value]
    return redact_values(value, secrets)


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    idempotency_key: str | None
    workflow_name: str
    workflow_hash: str
    workflow: dict[str, Any]
    source_path: str | None
    trigger: dict[str, Any]
    inputs: dict[str, Any]
    status: RunStatus
    message: str | None
    paused_node: str | None
    epoch: int
    outputs: Any
    output_dir: str
    budget_usd: Decimal | None
    reserved_usd: Decimal
    spent_usd: Decimal
    estimated_usd: Decimal
    created_at: float
    updated_at: float
    finished_at: float | None

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> RunRecord:
        m = row._mapping
        return cls(
            run_id=m["run_id"],
            idempotency_key=m["idempotency_key"],
            workflow_name=m["workflow_name"],
            workflow_hash=m["workflow_hash"],
            workflow=m["workflow"],
            source_path=m["source_path"],
            trigger=m["trigger"],
            inputs=m["inputs"],
            status=RunStatus(m["status"]),
            message=m["message"],
            paused_node=m["paused_node"],
            epoch=m["epoch"],
            outputs=m["outputs"],
            output_dir=m["output_dir"],
            budget_usd=None if m["budget_points"] is None else points_to_usd(m["budget_points"]),
            reserved_usd=points_to_usd(m["reserved_points"]),
            spent_usd=points_to_usd(m["spent_points"]),
            estimated_usd=points_to_usd(m["estimated_points"]),
            created_at=m["created_at"],
            updated_at=m["updated_at"],
            finished_at=m["finished_at"],
        )

    def public_dict(self) -> dict[str, Any]:
        """JSON output: money and moments as `klingflow.formats` shows them."""
        data = {k: v for k, v in self.__dict__.items() if k != "workflow"}
        data["status"] = self.status.value
        return json_values(data)


@dataclass(frozen=True)
class NodeRun:
    run_id: str
    epoch: int
    node_path: str
    node_id: str
    node_type: str
    item_index: int | None
    status: NodeStatus
    inputs: Any
    output: Any
    error: dict[str, Any] | None
    attempts: int
    task_id: str | None
    cost_usd: Decimal | None
    started_at: float | None
    finished_at: float | None

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> NodeRun:
        m = row._mapping
        cost = m["cost_points"]
        return cls(
            run_id=m["run_id"],
            epoch=m["epoch"],
            node_path=m["node_path"],
            node_id=m["node_id"],
            node_type=m["node_type"],
            item_index=m["item_index"],
            status=NodeStatus(m["status"]),
            inputs=m["inputs"],
            output=m["output"],
            error=m["error"],
            attempts=m["attempts"],
            task_id=m["task_id"],
            cost_usd=None if cost is None else points_to_usd(cost),
            started_at=m["started_at"],
            finished_at=m["finished_at"],
        )

    def public_dict(self) -> dict[str, Any]:
        """JSON output: money and moments as `klingflow.formats` shows them."""
        data = dict(self.__dict__)
        data["status"] = self.status.value
        return json_values(data)


@dataclass(frozen=True)
class Attempt:
    node_path: str
    number: int
    started_at: float
    ended_at: float
    error: dict[str, Any] | None
    retry_in_seconds: float | None

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> Attempt:
        m = row._mapping
        return cls(**{f.name: m[f.name] for f in fields(cls)})

    def public_dict(self) -> dict[str, Any]:
        """JSON output: moments as `klingflow.formats` shows them."""
        return json_values(dict(self.__dict__))


@dataclass(frozen=True)
class Intent:
    intent_id: str
    node_path: str
    state: IntentState
    task_id: str | None
    estimated_usd: Decimal
    note: str | None
    created_at: float

    def public_dict(self) -> dict[str, Any]:
        """JSON output: `estimate_usd` and moments as `klingflow.formats` shows them."""
        return json_values({**self.__dict__, "state": self.state.value})


ACTIVE_INTENT_STATES = frozenset(
    {IntentState.PREPARED, IntentState.SENT, IntentState.ACCEPTED, IntentState.UNCERTAIN}
)
"""Submissions PiAPI may still be working on (or that nobody has settled yet)."""


@dataclass(frozen=True)
class Submission:
    """A paid submission with the run it belongs to, for task lists across runs."""

    run_id: str
    workflow_name: str
    intent: Intent


@dataclass(frozen=True)
class Spend:
    """What runs have spent since a moment (`since`, Unix seconds) and in total."""

    since: float
    today_usd: Decimal
    total_usd: Decimal
    reserved_usd: Decimal
    runs_today: int
    runs_total: int


# -- the hot path's statements, built once: building a statement costs more than running it
# (docs/benchmarks.md). WHERE parameters are `q_*`; SET values are passed by column name.

_NODE_UPDATE = (
    node_runs.update()
    .where(node_runs.c.run_id == sa.bindparam("q_run"))
    .where(node_runs.c.epoch == sa.bindparam("q_epoch"))
    .where(node_runs.c.node_path == sa.bindparam("q_path"))
)
_NODE_UPDATE_COUNTING = _NODE_UPDATE.values(attempts=node_runs.c.attempts + 1)
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
_RESERVE = (
    runs.update()
    .where(runs.c.run_id == sa.bindparam("q_run"))
    .where(
        sa.or_(
            runs.c.budget_points.is_(None),
            runs.c.spent_points + runs.c.reserved_points + sa.bindparam("q_points")
            <= runs.c.budget_points,
        )
    )
    .values(
        reserved_points=runs.c.reserved_points + sa.bindparam("q_points"),
        estimated_points=runs.c.estimated_points + sa.bindparam("q_points"),
    )
)
_SETTLE = (
    runs.update()
    .where(runs.c.run_id == sa.bindparam("q_run"))
    .values(
        reserved_points=runs.c.reserved_points - sa.bindparam("q_reserved"),
        spent_points=runs.c.spent_points + sa.bindparam("q_spent"),
    )
)


def _node_upsert(engine: sa.Engine) -> Any:
    """INSERT a node's row, or restart the row a replay or retry left (its dialect's form)."""
    insert = _insert_for(engine)(node_runs)
    restarted = ("status", "inputs", "started_at", "error")
    return insert.on_conflict_do_update(
        index_elements=["run_id", "epoch", "node_path"],
        set_={name: insert.excluded[name] for name in restarted},
    )


class RunLog:
    """Reads and writes the run log; every write is its own short transaction."""

    def __init__(self, engine: sa.Engine, *, secrets: tuple[str, ...] = ()) -> None:
        self.engine = engine
        self.secrets = tuple(s for s in secrets if len(s) >= 4)
        create_tables(engine, metadata)
        self._node_upsert = _node_upsert(engine)

    def _clean(self, value: Any) -> Any:
        """What may be stored: secret-looking keys and known secret values masked."""
        return redact(value, self.secrets)

    @contextmanager
    def _tx(self) -> Iterator[sa.Connection]:
        with self.engine.begin() as connection:
            yield connection

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
            "budget_points": None if budget_usd is None else usd_to_points(budget_usd),
            "reserved_points": 0,
            "spent_points": 0,
            "estimated_points": 0,
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self._tx() as tx:
                tx.execute(runs.insert().values(**values))
        except sa.exc.IntegrityError:
            if idempotency_key is None:
                raise
            existing = self.find_by_key(idempotency_key)
            assert existing is not None  # the conflicting insert was this key's run
            return existing, False
        run = self.get_run(run_id)
        assert run is not None
        return run, True

    def find_by_key(self, idempotency_key: str) -> RunRecord | None:
        with self.engine.connect() as c:
            row = c.execute(runs.select().where(runs.c.idempotency_key == idempotency_key)).first()
        return RunRecord.from_row(row) if row else None

    def get_run(self, run_id: str) -> RunRecord | None:
        with self.engine.connect() as c:
            row = c.execute(runs.select().where(runs.c.run_id == run_id)).first()
        return RunRecord.from_row(row) if row else None

    def run_ids_starting_with(self, prefix: str, *, limit: int = 5) -> list[str]:
        """Up to `limit` run ids that begin with `prefix`, newest first (unique-prefix lookup)."""
        query = (
            sa.select(runs.c.run_id)
            .where(runs.c.run_id.startswith(prefix, autoescape=True))
            .order_by(runs.c.created_at.desc())
            .limit(limit)
        )
        with self.engine.connect() as c:
            return [row.run_id for row in c.execute(query)]

    def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow_name: str | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        query = runs.select().order_by(runs.c.created_at.desc()).limit(limit)
        if status is not None:
            query = query.where(runs.c.status == status.value)
        if workflow_name is not None:
            query = query.where(runs.c.workflow_name == workflow_name)
        with self.engine.connect() as c:
            return [RunRecord.from_row(row) for row in c.execute(query)]

    def set_status(
        self,
        run_id: str,
        status: RunStatus,
        *,
        message: str | None = None,
        paused_node: str | None = None,
        outputs: Any = None,
    ) -> None:
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
        with self._tx() as tx:
            tx.execute(runs.update().where(runs.c.run_id == run_id).values(**values))
        if RUN_LOGGER.isEnabledFor(logging.INFO) and (record := self.get_run(run_id)):
            log_run_event(record)  # `klingflow worker` / `serve` log each start, pause, finish

    def claim_paused(self, run_id: str, *, message: str) -> bool:
        """Queue a paused run for a command, unless another command (from any process)
        claimed it first: one atomic update, so two Retry clicks send one command."""
        with self._tx() as tx:
            result = tx.execute(
                runs.update()
                .where(runs.c.run_id == run_id, runs.c.status == RunStatus.PAUSED.value)
                .values(
                    status=RunStatus.QUEUED.value,
                    message=message,
                    paused_node=None,
                    updated_at=time.time(),
                )
            )
        return result.rowcount == 1

    def claim_crashed(self, run_id: str, *, message: str) -> bool:
        """Queue a crashed run to be run again (a crash is a pause we could not write),
        unless another command claimed it first: one atomic update, as `claim_paused`."""
        with self._tx() as tx:
            result = tx.execute(
                runs.update()
                .where(runs.c.run_id == run_id, runs.c.status == RunStatus.CRASHED.value)
                .values(
                    status=RunStatus.QUEUED.value,
                    message=message,
                    paused_node=None,
                    finished_at=None,
                    updated_at=time.time(),
                )
            )
        return result.rowcount == 1

    def new_epoch(self, run_id: str) -> int:
        """Start the run over (retry --from-start): earlier node results are kept, unused."""
        with self._tx() as tx:
            tx.execute(
                runs.update()
                .where(runs.c.run_id == run_id)
                .values(epoch=runs.c.epoch + 1, updated_at=time.time())
            )
            epoch: int = tx.execute(
                sa.select(runs.c.epoch).where(runs.c.run_id == run_id)
            ).scalar_one()
        return epoch

    # -- budget -----------------------------------------------------------------------------

    def settle(self, run_id: str, *, reserved_usd: Decimal, spent_usd: Decimal) -> None:
        """Release a reservation and record what was really charged."""
        with self._tx() as tx:
            tx.execute(
                _SETTLE,
                {
                    "q_run": run_id,
                    "q_reserved": usd_to_points(reserved_usd),
                    "q_spent": usd_to_points(spent_usd),
                },
            )

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
        row = {
            "run_id": run_id,
            "epoch": epoch,
            "node_path": node_path,
            "node_id": node_id,
            "node_type": node_type,
            "item_index": item_index,
            "attempts": 0,
            "status": NodeStatus.RUNNING.value,
            "inputs": self._clean(inputs),
            "started_at": time.time(),
            "error": None,
        }
        with self._tx() as tx:
            tx.execute(self._node_upsert, row)

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
        values: dict[str, Any] = {
            "q_run": run_id,
            "q_epoch": epoch,
            "q_path": node_path,
            "status": status.value,
            "output": self._clean(output),
            "error": self._clean(error),
            "finished_at": time.time(),
        }
        if attempts is not None and attempt is None:
            values["attempts"] = attempts
        if task_id is not None:
            values["task_id"] = task_id
        if cost_usd is not None:
            values["cost_points"] = usd_to_points(cost_usd)
        with self._tx() as tx:
            if attempt is not None:
                number, started_at = attempt
                tx.execute(
                    attempt_log.insert(),
                    {
                        "run_id": run_id, "epoch": epoch, "node_path": node_path,
                        "number": number, "started_at": started_at,
                        "ended_at": values["finished_at"], "error": values["error"],
                        "retry_in_seconds": None,
                    },
                )  # fmt: skip
            tx.execute(_NODE_UPDATE_COUNTING if attempt is not None else _NODE_UPDATE, values)

    def nodes(self, run_id: str, epoch: int | None = None) -> list[NodeRun]:
        query = node_runs.select().where(node_runs.c.run_id == run_id)
        if epoch is not None:
            query = query.where(node_runs.c.epoch == epoch)
        query = query.order_by(node_runs.c.id)
        with self.engine.connect() as c:
            return [NodeRun.from_row(row) for row in c.execute(query)]

    def finished_nodes(self, run_id: str, epoch: int) -> dict[str, NodeRun]:
        """Succeeded or skipped nodes of this epoch, by path: what a retry reuses."""
        done = {NodeStatus.SUCCEEDED, NodeStatus.SKIPPED}
        return {n.node_path: n for n in self.nodes(run_id, epoch) if n.status in done}

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
        with self._tx() as tx:
            tx.execute(
                attempt_log.insert().values(
                    run_id=run_id,
                    epoch=epoch,
                    node_path=node_path,
                    number=number,
                    started_at=started_at,
                    ended_at=time.time(),
                    error=self._clean(error),
                    retry_in_seconds=retry_in_seconds,
                )
            )
            tx.execute(
                node_runs.update()
                .where(node_runs.c.run_id == run_id)
                .where(node_runs.c.epoch == epoch)
                .where(node_runs.c.node_path == node_path)
                .values(attempts=node_runs.c.attempts + 1)
            )

    def attempts(self, run_id: str, *, epoch: int | None = None) -> list[Attempt]:
        """Every attempt of the run's nodes in order (of one epoch, when given)."""
        query = (
            attempt_log.select().where(attempt_log.c.run_id == run_id).order_by(attempt_log.c.id)
        )
        if epoch is not None:
            query = query.where(attempt_log.c.epoch == epoch)
        with self.engine.connect() as c:
            return [Attempt.from_row(row) for row in c.execute(query)]

    # -- submission intents -----------------------------------------------------------------

    def current_intent(self, run_id: str, epoch: int, node_path: str) -> Intent | None:
        """The node's live submission, if any. Rejected (nothing created), failed (the task is
        over: trying again means a new task) and abandoned intents do not count."""
        with self.engine.connect() as c:
            row = c.execute(
                _LIVE_INTENT, {"q_run": run_id, "q_epoch": epoch, "q_path": node_path}
            ).first()
        return None if row is None else _intent(row)

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
        points = usd_to_points(estimated_usd)
        intent_id = uuid.uuid4().hex
        now = time.time()
        with self._tx() as tx:
            reserved = tx.execute(_RESERVE, {"q_run": run_id, "q_points": points})
            if reserved.rowcount != 1:
                return None
            tx.execute(
                intents.insert(),
                {
                    "intent_id": intent_id, "run_id": run_id, "epoch": epoch,
                    "node_path": node_path, "state": IntentState.PREPARED.value,
                    "request": self._clean(request), "estimated_points": points,
                    "created_at": now, "updated_at": now,
                },
            )  # fmt: skip
        return intent_id

    def mark_sent(self, intent_id: str) -> None:
        """The create POST is leaving now: from here a crash leaves it uncertain."""
        with self._tx() as tx:
            tx.execute(
                intents.update()
                .where(intents.c.intent_id == intent_id)
                .where(intents.c.state == IntentState.PREPARED.value)
                .values(state=IntentState.SENT.value, updated_at=time.time())
            )

    def accept_intent(
        self, intent_id: str, *, run_id: str, epoch: int, node_path: str, task_id: str
    ) -> None:
        """PiAPI took the submission: keep its task id, on the intent and the node.

        A task id already bound to another intent (an emulator replaying its ids, a proxy
        answering from a cache) is never merged: that would book this submission's cost on
        the other run. The intent becomes uncertain and `TaskIdConflictError` names both runs.
        """
        with self._tx() as tx:
            owner = tx.execute(_INTENT_BY_TASK, {"q_task": task_id}).first()
            if owner is not None and owner.intent_id != intent_id:
                conflict = TaskIdConflictError(
                    f"PiAPI answered node {node_path} of run {run_id} (intent {intent_id}) with "
                    f"task {task_id}, which the run log already holds for run {owner.run_id} "
                    f"(intent {owner.intent_id}, node {owner.node_path}); klingflow will not book "
                    "one task on two runs: check the task at PiAPI, then settle this run with "
                    f"`klingflow runs retry {run_id} --task-id ID` or `--resubmit`"
                )
            else:
                conflict = None
                tx.execute(
                    _INTENT_UPDATE,
                    {
                        "q_intent": intent_id,
                        "state": IntentState.ACCEPTED.value,
                        "task_id": task_id,
                        "updated_at": time.time(),
                    },
                )
                tx.execute(
                    _NODE_UPDATE,
                    {"q_run": run_id, "q_epoch": epoch, "q_path": node_path, "task_id": task_id},
                )
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
        values: dict[str, Any] = {"state": state.value, "updated_at": time.time()}
        if task_id is not None:
            values["task_id"] = task_id
        if note is not None:
            values["note"] = self._clean(note)
        with self._tx() as tx:
            tx.execute(intents.update().where(intents.c.intent_id == intent_id).values(**values))

    def intents(
        self, run_id: str, *, epoch: int | None = None, limit: int | None = None
    ) -> list[Intent]:
        """The run's submissions, oldest first (the first `limit`, when given)."""
        query = intents.select().where(intents.c.run_id == run_id)
        if epoch is not None:
            query = query.where(intents.c.epoch == epoch)
        query = query.order_by(intents.c.created_at).limit(limit)
        with self.engine.connect() as c:
            return [_intent(row) for row in c.execute(query)]

    def intent_for_task(self, task_id: str) -> tuple[str, Intent] | None:
        """(run_id, intent) of the submission that created `task_id`."""
        with self.engine.connect() as c:
            row = c.execute(_INTENT_BY_TASK, {"q_task": task_id}).first()
        return None if row is None else (row.run_id, _intent(row))

    def intent_request(self, intent_id: str) -> dict[str, Any]:
        """The create body an intent recorded (secrets masked), to match a task against."""
        with self.engine.connect() as c:
            request: dict[str, Any] = c.execute(
                sa.select(intents.c.request).where(intents.c.intent_id == intent_id)
            ).scalar_one()
        return request

    def intent_by_id(self, intent_id: str) -> tuple[str, Intent] | None:
        """(run_id, intent) for a webhook that names an intent."""
        with self.engine.connect() as c:
            row = c.execute(_INTENT_BY_ID, {"q_intent": intent_id}).first()
        return None if row is None else (row.run_id, _intent(row))

    def finish_intent(self, task_id: str, state: IntentState, *, spent_points: int) -> bool:
        """Close an accepted submission and settle its reservation, once (False if done)."""
        with self._tx() as tx:
            row = tx.execute(_INTENT_BY_TASK, {"q_task": task_id}).first()
            if row is None or row.state != IntentState.ACCEPTED.value:
                return False
            tx.execute(
                _INTENT_UPDATE,
                {"q_intent": row.intent_id, "state": state.value, "updated_at": time.time()},
            )
            tx.execute(
                _SETTLE,
                {"q_run": row.run_id, "q_reserved": row.estimated_points, "q_spent": spent_points},
            )
        return True

    def mark_uncertain(self, intent_id: str, *, note: str) -> str | None:
        """A sent submission got no answer: mark it uncertain, unless a webhook already
        named its task, whose id is then returned."""
        with self._tx() as tx:
            tx.execute(
                intents.update()
                .where(intents.c.intent_id == intent_id)
                .where(intents.c.state == IntentState.SENT.value)
                .values(
                    state=IntentState.UNCERTAIN.value,
                    note=self._clean(note),
                    updated_at=time.time(),
                )
            )
            row = tx.execute(intents.select().where(intents.c.intent_id == intent_id)).first()
        return row.task_id if row is not None and row.state == IntentState.ACCEPTED.value else None

    def abandon_intent(self, intent_id: str, *, note: str) -> None:
        """Give up on an uncertain submission (the node submits again). Whether it made a
        task is unknown, so its estimate stays reserved, not spent: spent is only what PiAPI
        charged. PiAPI's webhook, if one comes, settles it (`settle_abandoned`)."""
        with self._tx() as tx:
            tx.execute(
                intents.update()
                .where(intents.c.intent_id == intent_id)
                .where(intents.c.state == IntentState.UNCERTAIN.value)
                .values(state=IntentState.ABANDONED.value, note=note, updated_at=time.time())
            )

    def settle_abandoned(self, intent_id: str, *, task_id: str, spent_points: int) -> bool:
        """An abandoned submission did make `task_id`, which ended costing `spent_points`:
        its reservation becomes what it cost, once (False if already settled)."""
        with self._tx() as tx:
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
            tx.execute(
                _SETTLE,
                {"q_run": row.run_id, "q_reserved": row.estimated_points, "q_spent": spent_points},
            )
        return True

    # -- summaries (dashboard, /api/spend, /api/tasks) ---------------------------------------

    def status_counts(self, *, workflow_name: str | None = None) -> dict[RunStatus, int]:
        """How many runs are in each status (every status present, zeros included)."""
        query = sa.select(runs.c.status, sa.func.count()).group_by(runs.c.status)
        if workflow_name is not None:
            query = query.where(runs.c.workflow_name == workflow_name)
        with self.engine.connect() as c:
            counted = {RunStatus(status): count for status, count in c.execute(query)}
        return {status: counted.get(status, 0) for status in RunStatus}

    def spend(self, since: float) -> Spend:
        """Charged and reserved amounts, summed in the database (runs counted by start)."""
        recent = runs.c.created_at >= since
        query = sa.select(
            sa.func.coalesce(sa.func.sum(runs.c.spent_points), 0),
            sa.func.coalesce(sa.func.sum(sa.case((recent, runs.c.spent_points), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(runs.c.reserved_points), 0),
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(sa.case((recent, 1), else_=0)), 0),
        )
        with self.engine.connect() as c:
            total, today, reserved, count, count_today = c.execute(query).one()
        return Spend(
            since=since,
            today_usd=points_to_usd(int(today)),
            total_usd=points_to_usd(int(total)),
            reserved_usd=points_to_usd(int(reserved)),
            runs_today=int(count_today),
            runs_total=int(count),
        )

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
        with self.engine.connect() as c:
            return [
                Submission(run_id=row.run_id, workflow_name=row.workflow_name, intent=_intent(row))
                for row in c.execute(query)
            ]


def _insert_for(engine: sa.Engine) -> Any:
    """The dialect's INSERT, which has ON CONFLICT DO UPDATE (SQLite and Postgres)."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert
    return sqlite.insert


def _intent(row: sa.Row[Any]) -> Intent:
    return Intent(
        intent_id=row.intent_id,
        node_path=row.node_path,
        state=IntentState(row.state),
        task_id=row.task_id,
        estimated_usd=points_to_usd(row.estimated_points),
        note=row.note,
        created_at=row.created_at,
    )
