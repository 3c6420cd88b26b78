"""Template databases: the run log's and DBOS's tables made once a worker, copied per test.

Every engine and service test used to start on an empty database, so each paid for creating
the `kf_*` tables and DBOS's migrations (about 0.07 s of CPU on SQLite; on Postgres 0.16 s
here and as much again in the server, plus a second of wall in `CREATE INDEX CONCURRENTLY`).
Most tests are about what a run does, not about a first start: they get a copy of a
database on which that creation already ran (a file copy on SQLite, `CREATE DATABASE ...
TEMPLATE` on Postgres). The creation itself stays tested: the template is made by the same
code path (`create_tables`, `DBOS.migrate`), a test marked `empty_database` gets an empty
one, and tests that start processes on a new database (test_scaleout.py, test_postgres.py,
the crash and CLI tests) still do. No queue, worker or run is in a template: the engine
registers its queues at each launch. On Postgres a worker's copies are also used again:
emptied after a test (`PostgresCopies`), a copy costs the server a twentieth of a new one.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql


def empty_database_wanted(request: pytest.FixtureRequest) -> bool:
    """Whether the test is marked `empty_database`: it starts on a database nothing made."""
    return request.node.get_closest_marker("empty_database") is not None


def create_schema(url: str) -> None:
    """What an engine's first launch creates on a new database: the `kf_*` tables, then DBOS's
    system tables (its migrations), by the engine's own functions."""
    from dbos import DBOS

    from klingflow.workflows.database import make_engine
    from klingflow.workflows.schema import create_tables

    engine = make_engine(url)
    try:
        create_tables(engine)
    finally:
        engine.dispose()
    DBOS.migrate(url)


def sqlite_template(folder: Path) -> Path:
    """A SQLite file with the schema, in `folder` (made once per process by the caller)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "template.sqlite"
    create_schema(f"sqlite:///{path}")
    return path


def copy_sqlite_template(template: Path, home: Path) -> None:
    """Put a copy of `template` where a harness or service in `home` keeps its run log
    (unless one is there already: a second service on the same home)."""
    target = home / "klingflow.sqlite"
    if target.exists():
        return
    home.mkdir(parents=True, exist_ok=True)
    assert not template.with_name(template.name + "-wal").exists(), "template left open"
    shutil.copyfile(template, target)


def postgres_template(admin: psycopg.Connection[object], admin_url: str) -> str:
    """Create a Postgres database with the schema; its name (dropped by the caller)."""
    name = f"kf_template_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    create_schema(url_for_database(admin_url, name))
    return name


def url_for_database(admin_url: str, name: str) -> str:
    """The URL of database `name` on the server of `admin_url`."""
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


POSTGRES_ENV = "KLINGFLOW_TEST_POSTGRES_URL"
"""The admin URL of the Postgres server the tests may create databases on (unset: skip)."""


def postgres_admin_url() -> str:
    """The admin URL of the test server (skip the test when there is none)."""
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        pytest.skip(f"{POSTGRES_ENV} is not set: no Postgres server to test against")
    return admin_url


def connect_admin(admin_url: str) -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection to the test server (skip the test when it does not answer)."""
    try:
        return psycopg.connect(admin_url, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        pytest.skip(f"Postgres at {POSTGRES_ENV} is not reachable: {error}")


def new_postgres_database() -> Iterator[str]:
    """The URL of a fresh, empty database of a random name (so pytest-xdist workers never
    share one) on the test server; dropped after the test. For a fixture to `yield from`."""
    admin_url = postgres_admin_url()
    name = f"kf_test_{uuid.uuid4().hex[:12]}"
    with connect_admin(admin_url) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield url_for_database(admin_url, name)
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@dataclass
class PostgresCopies:
    """Copies of a Postgres template for one worker's tests, each emptied after its test and
    handed to the next one.

    A new copy (`CREATE DATABASE ... TEMPLATE`, then `DROP DATABASE`) cost the server 0.25 s
    of CPU and the test 0.26 s of wall; emptying a used one costs 0.01 s and 15 ms. A copy
    goes back only once no session is left on it and every row the test wrote is gone; one
    that cannot be emptied is dropped, and the next test gets a new copy."""

    admin: psycopg.Connection[Any]
    admin_url: str
    template: str
    spare: list[str] = field(default_factory=list)
    _tables_to_empty: list[sql.Identifier] = field(default_factory=list)
    _sequences: list[sql.Identifier] = field(default_factory=list)

    def take(self) -> str:
        """The name of a copy with the template's schema and rows, and no session on it."""
        if self.spare:
            return self.spare.pop()
        name = f"kf_test_{uuid.uuid4().hex[:12]}"
        self.admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        if not self._tables_to_empty:
            self._learn(name)
        return name

    def give_back(self, name: str) -> None:
        """Empty copy `name` for the next test, or drop it when it cannot be emptied."""
        try:
            self._empty(name)
        except (psycopg.Error, TimeoutError):
            self.admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        else:
            self.spare.append(name)

    def drop_all(self) -> None:
        """Drop the spare copies and the template (at the end of the worker's session)."""
        for name in (*self.spare, self.template):
            self.admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        self.spare.clear()

    def _learn(self, name: str) -> None:
        """Note what a test may write to: every table the template has no rows in (those a
        foreign key refers to last, after the rows that refer to them), and every sequence."""
        with psycopg.connect(url_for_database(self.admin_url, name)) as db:
            referred = set(db.execute(_REFERRED))
            tables = sorted(db.execute(_TABLES), key=lambda row: row in referred)
            named = [sql.Identifier(*row) for row in tables]
            empty = [t for t in named if not db.execute(_ANY_ROW.format(t)).fetchone()]
            self._tables_to_empty = empty
            self._sequences = [sql.Identifier(*row) for row in db.execute(_SEQUENCES)]

    def _empty(self, name: str) -> None:
        """End every session on copy `name` (as `DROP ... WITH (FORCE)` did), then delete the
        test's rows and restart the sequences."""
        deadline = time.monotonic() + 5
        while self.admin.execute(_END_SESSIONS, (name,)).fetchone():
            if time.monotonic() > deadline:
                raise TimeoutError(f"sessions on {name} did not end")
            time.sleep(0.01)
        with psycopg.connect(url_for_database(self.admin_url, name)) as db:
            for table in self._tables_to_empty:
                db.execute(sql.SQL("DELETE FROM {}").format(table))
            for sequence in self._sequences:
                db.execute(sql.SQL("ALTER SEQUENCE {} RESTART").format(sequence))


_END_SESSIONS = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE datname = %s AND pid <> pg_backend_pid()"
)
"""Ends the other sessions on a database; a row for each session still there."""

_TABLES = (
    "SELECT schemaname, tablename FROM pg_tables "
    "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
)
_REFERRED = (
    "SELECT DISTINCT n.nspname, c.relname FROM pg_constraint k "
    "JOIN pg_class c ON c.oid = k.confrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE k.contype = 'f'"
)
_SEQUENCES = "SELECT schemaname, sequencename FROM pg_sequences"
"""Tables, the tables a foreign key refers to, and sequences: (schema, name) rows."""
_ANY_ROW = sql.SQL("SELECT 1 FROM {} LIMIT 1")
