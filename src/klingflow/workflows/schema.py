"""Every `kf_*` table, in one `MetaData`, and their creation when several processes start at once.

One schema for the whole run log, the workflow registry, the executors' heartbeats and the
account-wide leases, so a reader sees every table klingflow keeps in one page, and one call
(`create_tables`) creates them all, whichever component starts first.

`metadata.create_all` checks for a table, then creates it: two processes starting together on
a fresh Postgres database both see no `kf_runs` and one dies with `UniqueViolation`. DBOS's
own migrations check-then-create the same way. So on Postgres each is done under an advisory
lock: the first process creates, the others wait a moment and then find everything there.

Two keys, never nested the other way round, so a process holding the DBOS lock while it
builds the run log (Engine.launch) cannot deadlock with one that only builds the run log.
SQLite needs none of this: its IMMEDIATE transactions and busy timeout already serialize
writers, and it serves one machine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from klingflow.workflows.database import is_sqlite
from klingflow.workflows.records import IntentState

__all__ = [
    "BUDGET_COLUMNS",
    "DBOS_SCHEMA_LOCK",
    "TABLES_LOCK",
    "attempt_log",
    "create_tables",
    "failed_sign_ins",
    "intents",
    "leases",
    "metadata",
    "node_runs",
    "revoked_sessions",
    "run_budgets",
    "run_secrets",
    "runs",
    "schema_lock",
    "with_budget",
    "workers",
    "workflows",
]

TABLES_LOCK = 0x6B66_0001
"""Advisory-lock key held while klingflow's own tables are created."""
DBOS_SCHEMA_LOCK = 0x6B66_0002
"""Advisory-lock key held while DBOS launches (and migrates its system tables)."""
LOCK_POLL_SECONDS = 0.05

log = logging.getLogger("klingflow.database")

metadata = sa.MetaData()
"""Every table klingflow keeps beside DBOS's own."""

# -- the run log: runs, their nodes and attempts, and the paid-submission journal ---------

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
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float, nullable=True),
)

run_budgets = sa.Table(
    "kf_run_budgets",
    metadata,
    sa.Column("run_id", sa.String(64), sa.ForeignKey("kf_runs.run_id"), primary_key=True),
    sa.Column("budget_points", sa.BigInteger, nullable=True),
    sa.Column("reserved_points", sa.BigInteger, nullable=False, default=0),
    sa.Column("spent_points", sa.BigInteger, nullable=False, default=0),
    sa.Column("estimated_points", sa.BigInteger, nullable=False, default=0),
)
"""A run's money, changed twice per video, in a narrow row of its own: SQLite rewrites a
whole row on UPDATE, and the run's row holds its trigger and inputs (megabytes for a
100,000-prompt batch; measured: the batch's rate fell from 49 to 26 videos/s)."""
BUDGET_COLUMNS = ("budget_points", "reserved_points", "spent_points", "estimated_points")


def with_budget(*columns: sa.ColumnElement[Any] | sa.Table) -> sa.Select[Any]:
    """A select of `columns` (of `kf_runs`) with each run's budget columns beside them."""
    budget = (run_budgets.c[name] for name in BUDGET_COLUMNS)
    return sa.select(*columns, *budget).join_from(runs, run_budgets)


_ITEM_COLUMNS = ("run_id", "epoch", "item_index", "node_path", "status", "cost_points")
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
    # A run's top-level nodes, and one page of a loop's items, without visiting every item;
    # a loop's items counted by status from the index alone (`runs show` on 100,000 items:
    # 125 -> 55 ms on SQLite, no visit of each item's row).
    sa.Index("ix_kf_node_runs_item_status", *_ITEM_COLUMNS),
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
    # A run's submissions counted by state from the index, in its order (`runs show` on
    # 100,000: 65 -> 10 ms on SQLite).
    sa.Index("ix_kf_intents_run_state", "run_id", "state"),
)
_DEAD_STATES = (IntentState.REJECTED, IntentState.FAILED, IntentState.ABANDONED)
RETIRED_INDEXES = ("ix_kf_node_runs_item",)
"""Indexes an older klingflow made, each the first columns of its successor above: dropped
once the successor exists (both would be written on every update)."""
PARTIAL_INDEXES = {
    "uq_kf_intents_live": (
        "CREATE UNIQUE INDEX uq_kf_intents_live ON kf_intents (run_id, epoch, node_path) "
        f"WHERE state NOT IN ({', '.join(repr(state.value) for state in _DEAD_STATES)})"
    ),
}
"""Indexes made by their SQL, the same on SQLite and Postgres (declared on the table, a
partial index loads the Postgres dialect in every reader of a SQLite run log).
`uq_kf_intents_live`: a node has one live submission at most, so two processes claiming it
at once cannot both record one, whatever else they do (workflows/claims.py; a paid task is
never sent twice)."""

# -- the workflow registry (workflows/registry.py) ----------------------------------------

workflows = sa.Table(
    "kf_workflows",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("source", sa.Text, nullable=False),
    # When the version was last published (not first): the latest version has the largest.
    sa.Column("created_at", sa.Float, nullable=False),
)

# -- account-wide limits as leased slots, Postgres only (workflows/leases.py) -------------

leases = sa.Table(
    "kf_leases",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),  # task | request
    sa.Column("slot", sa.Integer, primary_key=True),
    sa.Column("holder", sa.String(255), nullable=True),  # executor id; NULL: free
    sa.Column("lease_id", sa.String(32), nullable=True),
    sa.Column("task_id", sa.String(255), nullable=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),  # request answered
)

# -- a run's secret inputs, sealed (workflows/secret_inputs.py) ----------------------------

run_secrets = sa.Table(
    "kf_run_secrets",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("sealed", sa.Text, nullable=False),  # a Fernet token; the key is not stored
)

# -- the service's sign-ins, shared by every `serve` process (service/session_log.py) ----

revoked_sessions = sa.Table(
    "kf_revoked_sessions",
    metadata,
    sa.Column("sid", sa.String(64), primary_key=True),  # the signed-out session's id
    sa.Column("expires_at", sa.Float, nullable=False),  # when its cookie would expire anyway
)

failed_sign_ins = sa.Table(
    "kf_failed_sign_ins",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("client", sa.String(255), nullable=False, index=True),  # an IP address
    sa.Column("failed_at", sa.Float, nullable=False, index=True),
)

# -- executors' heartbeats and takeovers (workflows/workers.py) --------------------------

workers = sa.Table(
    "kf_workers",
    metadata,
    sa.Column("executor_id", sa.String(255), primary_key=True),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),  # worker | serve | run
    sa.Column("heartbeat_seconds", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    sa.Column("stopped_at", sa.Float, nullable=True),
    sa.Column("recover_requested_at", sa.Float, nullable=True),
    sa.Column("recovered_by", sa.String(255), nullable=True),
    sa.Column("recovered_at", sa.Float, nullable=True),
    sa.Column("recovered_runs", sa.Integer, nullable=True),
)


def create_tables(engine: sa.Engine) -> None:
    """Create every missing `kf_*` table, safe when other processes do it at the same moment."""
    with engine.begin() as connection:
        if not is_sqlite(str(engine.url)):
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(TABLES_LOCK)))
        metadata.create_all(connection)
        _create_indexes(connection)
        _move_budgets(connection)


def _move_budgets(connection: sa.Connection) -> None:
    """Move the budget columns an older klingflow kept in `kf_runs` to `kf_run_budgets`,
    reservations of runs in flight included, in the transaction that created the table."""
    found = {column["name"] for column in sa.inspect(connection).get_columns(runs.name)}
    if not found.issuperset(BUDGET_COLUMNS):
        return
    old = sa.table(runs.name, sa.column("run_id"), *(sa.column(name) for name in BUDGET_COLUMNS))
    moved = sa.select(old.c.run_id, *(old.c[name] for name in BUDGET_COLUMNS)).where(
        old.c.run_id.notin_(sa.select(run_budgets.c.run_id))
    )
    connection.execute(run_budgets.insert().from_select(["run_id", *BUDGET_COLUMNS], moved))
    for name in BUDGET_COLUMNS:
        connection.execute(sa.text(f"ALTER TABLE {runs.name} DROP COLUMN {name}"))


def _create_indexes(connection: sa.Connection) -> None:
    """Add the indexes a newer klingflow declares to tables an older one created
    (`create_all` makes an index only with its table), and drop those they replace; the
    existing ones are read in one go, as every process start passes here."""
    tables = metadata.sorted_tables
    found = sa.inspect(connection).get_multi_indexes(filter_names=[t.name for t in tables])
    existing = {index["name"] for indexes in found.values() for index in indexes}
    for table in tables:
        for index in table.indexes:
            if index.name not in existing:
                index.create(connection)
    for name, sql in PARTIAL_INDEXES.items():
        if name not in existing:
            _create_unique_index(connection, name, sql)
    for name in RETIRED_INDEXES:
        if name in existing:
            connection.execute(sa.text(f"DROP INDEX {name}"))


def _create_unique_index(connection: sa.Connection, name: str, sql: str) -> None:
    """Create a unique index; when rows written by an older klingflow break it, it is left
    out with a warning (the log stays readable; what it would prevent happened already)."""
    try:
        with connection.begin_nested():
            connection.execute(sa.text(sql))
    except sa.exc.IntegrityError as error:
        log.warning(
            "the run log's index %s was not created: rows it forbids exist (%s); "
            "find them with the index's columns and settle them by hand",
            name,
            str(error.orig).splitlines()[0],
        )


@contextmanager
def schema_lock(engine: sa.Engine, key: int = DBOS_SCHEMA_LOCK) -> Iterator[None]:
    """Hold a Postgres session advisory lock for the block (nothing on SQLite).

    Waiters poll `pg_try_advisory_lock` in autocommit instead of blocking in
    `pg_advisory_lock`: a blocked statement keeps a snapshot open, and DBOS's `CREATE INDEX
    CONCURRENTLY` migrations wait for every open snapshot, so the lock holder would wait for
    its waiters forever (measured: five processes hung).
    """
    if is_sqlite(str(engine.url)):
        yield
        return
    with engine.connect() as raw:
        connection = raw.execution_options(isolation_level="AUTOCOMMIT")
        try_lock = sa.select(sa.func.pg_try_advisory_lock(key))
        while not connection.execute(try_lock).scalar_one():
            time.sleep(LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            connection.execute(sa.select(sa.func.pg_advisory_unlock(key)))
