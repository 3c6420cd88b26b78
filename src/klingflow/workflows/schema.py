"""Schema creation that several processes may run at once on one empty database.

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

import time
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from klingflow.workflows.database import is_sqlite

__all__ = ["DBOS_SCHEMA_LOCK", "TABLES_LOCK", "create_tables", "schema_lock"]

TABLES_LOCK = 0x6B66_0001
"""Advisory-lock key held while klingflow's own tables are created."""
DBOS_SCHEMA_LOCK = 0x6B66_0002
"""Advisory-lock key held while DBOS launches (and migrates its system tables)."""
LOCK_POLL_SECONDS = 0.05


def create_tables(engine: sa.Engine, metadata: sa.MetaData) -> None:
    """`metadata.create_all`, safe when other processes do the same at the same moment."""
    if is_sqlite(str(engine.url)):
        metadata.create_all(engine)
        return
    with engine.begin() as connection:
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(TABLES_LOCK)))
        metadata.create_all(connection)


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
