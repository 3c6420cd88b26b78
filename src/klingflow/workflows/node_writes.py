"""The run log's writes of a node's life (started, failed attempts, finished), as `Write`s.

One definition each, for `RunLog`'s two forms: a transaction of its own (`node_started`) and
the hot path's group commit (`node_started_soon`, workflows/group_commit.py). Statements are
built once where they can be: building one costs more than running it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from klingflow.piapi.points import usd_to_points
from klingflow.workflows.group_commit import Write
from klingflow.workflows.intents import NODE_UPDATE
from klingflow.workflows.prepared import execute
from klingflow.workflows.records import NodeStatus
from klingflow.workflows.schema import attempt_log, node_runs

__all__ = ["failed_attempt", "finished", "node_upsert", "started"]

Clean = Callable[[Any], Any]
"""What may be stored of a value: `Transactions._clean` (secrets masked)."""

_NODE_UPDATE_COUNTING = NODE_UPDATE.values(attempts=node_runs.c.attempts + 1)
_ATTEMPT_INSERT = attempt_log.insert()
_HAS_ATTEMPT = sa.select(attempt_log.c.id).where(
    attempt_log.c.run_id == sa.bindparam("q_run"),
    attempt_log.c.epoch == sa.bindparam("q_epoch"),
    attempt_log.c.node_path == sa.bindparam("q_path"),
    attempt_log.c.number == sa.bindparam("q_number"),
    attempt_log.c.started_at == sa.bindparam("q_started"),
)


def node_upsert(engine: sa.Engine) -> Any:
    """INSERT a node's row, or restart the row a replay or retry left (its dialect's form)."""
    # Imported here: the Postgres dialect costs a reader of a SQLite run log ~0.1 s at start.
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        insert: Any = postgresql_insert(node_runs)  # both have ON CONFLICT DO UPDATE
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        insert = sqlite_insert(node_runs)
    restarted = ("status", "inputs", "started_at", "error")
    return insert.on_conflict_do_update(
        index_elements=["run_id", "epoch", "node_path"],
        set_={name: insert.excluded[name] for name in restarted},
    )


def started(
    upsert: Any,
    clean: Clean,
    run_id: str,
    epoch: int,
    node_path: str,
    node_id: str,
    node_type: str,
    item_index: int | None,
    inputs: Any,
) -> Write[None]:
    """The node's row, new or restarted (`running`, no error): a replay writes it again."""
    row = {
        "run_id": run_id,
        "epoch": epoch,
        "node_path": node_path,
        "node_id": node_id,
        "node_type": node_type,
        "item_index": item_index,
        "attempts": 0,
        "status": NodeStatus.RUNNING.value,
        "inputs": clean(inputs),
        "started_at": time.time(),
        "error": None,
    }

    def write(tx: sa.Connection) -> None:
        execute(tx, upsert, row)

    return Write(write, idempotent=True)


def finished(
    clean: Clean,
    run_id: str,
    epoch: int,
    node_path: str,
    status: NodeStatus,
    output: Any,
    error: dict[str, Any] | None,
    attempts: int | None,
    task_id: str | None,
    cost_usd: Decimal | None,
    attempt: tuple[int, float] | None,
) -> Write[None]:
    """The node's outcome; with `attempt` (number, started_at), its last attempt too."""
    values: dict[str, Any] = {
        "q_run": run_id,
        "q_epoch": epoch,
        "q_path": node_path,
        "status": status.value,
        "output": clean(output),
        "error": clean(error),
        "finished_at": time.time(),
    }
    if attempts is not None and attempt is None:
        values["attempts"] = attempts
    if task_id is not None:
        values["task_id"] = task_id
    if cost_usd is not None:
        values["cost_points"] = usd_to_points(cost_usd)
    if attempt is None:

        def update(tx: sa.Connection) -> None:
            execute(tx, NODE_UPDATE, values)

        return Write(update, idempotent=True)
    number, started_at = attempt
    return _with_attempt(
        values, number=number, started_at=started_at, ended_at=values["finished_at"],
        error=values["error"], retry_in_seconds=None,
    )  # fmt: skip


def failed_attempt(
    clean: Clean,
    run_id: str,
    epoch: int,
    node_path: str,
    number: int,
    started_at: float,
    error: dict[str, Any] | None,
    retry_in_seconds: float | None,
) -> Write[None]:
    """A failed attempt that will be retried, counted on its node."""
    where = {"q_run": run_id, "q_epoch": epoch, "q_path": node_path}
    return _with_attempt(
        where, number=number, started_at=started_at, ended_at=time.time(),
        error=clean(error), retry_in_seconds=retry_in_seconds,
    )  # fmt: skip


def _with_attempt(
    node_values: dict[str, Any],
    *,
    number: int,
    started_at: float,
    ended_at: float,
    error: Any,
    retry_in_seconds: float | None,
) -> Write[None]:
    """Insert an attempt and update its node (counting it) in one transaction; after a cut
    COMMIT, done again only if the attempt's row is not there."""
    run_id, epoch, node_path = node_values["q_run"], node_values["q_epoch"], node_values["q_path"]
    row = {
        "run_id": run_id, "epoch": epoch, "node_path": node_path, "number": number,
        "started_at": started_at, "ended_at": ended_at, "error": error,
        "retry_in_seconds": retry_in_seconds,
    }  # fmt: skip
    mine = {"q_run": run_id, "q_epoch": epoch, "q_path": node_path, "q_number": number,
            "q_started": started_at}  # fmt: skip

    def record(tx: sa.Connection) -> None:
        execute(tx, _ATTEMPT_INSERT, row)
        execute(tx, _NODE_UPDATE_COUNTING, node_values)

    def committed(connection: sa.Connection) -> bool:
        return connection.execute(_HAS_ATTEMPT, mine).first() is not None

    return Write(record, committed=committed)
