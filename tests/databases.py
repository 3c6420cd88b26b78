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
registers its queues at each launch.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import psycopg
import pytest


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
    create_schema(admin_url.rsplit("/", 1)[0] + f"/{name}")
    return name
