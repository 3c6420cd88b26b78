"""Fixtures of the workflow tests: the `harness` (an Engine on the emulator) and Postgres.

A test module on Postgres overrides `database_url` with `postgres_url`; every other one gets
a SQLite file in the test's own folder, or, with `KLINGFLOW_TEST_DATABASE=postgres`, a fresh
Postgres database: one switch runs every engine test on either. `KLINGFLOW_TEST_DATABASE=both`
(what `make test` sets) runs each of them twice in the same session, `[sqlite]` and
`[postgres]`, so the Postgres leg fills the workers' idle tail instead of a second run.
The harness's database is a copy of a template with the schema (tests/databases.py), empty
for a test marked `empty_database`; `postgres_url` is always empty.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa

from klingflow.emulator import EmulatorServer
from klingflow.workflows.database import make_engine

from ..databases import (
    PostgresCopies,
    connect_admin,
    copy_sqlite_template,
    empty_database_wanted,
    new_postgres_database,
    postgres_admin_url,
    postgres_template,
    url_for_database,
)
from .harness import Harness


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty database on the server named by KLINGFLOW_TEST_POSTGRES_URL."""
    yield from new_postgres_database()


@pytest.fixture(scope="session")
def postgres_schema() -> Iterator[PostgresCopies]:
    """A database with the schema and nothing else, made once a worker (tests/databases.py),
    and the copies of it the switched engine tests start on."""
    admin_url = postgres_admin_url()
    with connect_admin(admin_url) as admin:
        copies = PostgresCopies(admin, admin_url, postgres_template(admin, admin_url))
        try:
            yield copies
        finally:
            copies.drop_all()


@pytest.fixture
def postgres_schema_url(postgres_schema: PostgresCopies) -> Iterator[str]:
    """A database on the test server equal to the template: the schema and no test's rows."""
    name = postgres_schema.take()
    try:
        yield url_for_database(postgres_schema.admin_url, name)
    finally:
        postgres_schema.give_back(name)


DATABASE_SWITCH = "KLINGFLOW_TEST_DATABASE"
"""`sqlite` (the default), `postgres` or `both`: where the harness keeps its run log and DBOS."""

DATABASES = ("sqlite", "postgres")


def _switch() -> str:
    switch = os.environ.get(DATABASE_SWITCH, "sqlite")
    if switch not in {*DATABASES, "both"}:
        raise pytest.UsageError(
            f"{DATABASE_SWITCH} must be sqlite, postgres or both, not {switch!r}"
        )
    return switch


def _switched(fixturenames: Sequence[str], module: object) -> bool:
    """Whether the switch decides this test's database: its harness takes the default
    `database_url` (a module that picks its own database overrides the fixture)."""
    return "database_url" in fixturenames and not hasattr(module, "database_url")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """With the switch on `both`, each switched test runs once per database."""
    if _switch() == "both" and _switched(metafunc.fixturenames, metafunc.module):
        metafunc.parametrize("database_url", DATABASES, indirect=True)


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> str | None:
    """The harness's database: None means a SQLite file in the test's folder."""
    switch: str = getattr(request, "param", None) or _switch()
    if switch == "postgres":
        empty = empty_database_wanted(request)
        url: str = request.getfixturevalue("postgres_url" if empty else "postgres_schema_url")
        return url
    return None


@pytest.fixture(params=DATABASES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """A run log's engine on each database in turn, whatever the switch: a SQLite file in
    the test's folder, then a fresh Postgres database (for tests of the schema itself)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'runs.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def harness(
    emulator: EmulatorServer,
    tmp_path: Path,
    api_key: str,
    database_url: str | None,
    request: pytest.FixtureRequest,
) -> Iterator[Harness]:
    """An Engine factory on the emulator with fast policies, its data in the test's folder
    (on SQLite, a copy of the schema's template unless the test wants an empty database)."""
    if database_url is None and not empty_database_wanted(request):
        copy_sqlite_template(request.getfixturevalue("sqlite_schema"), tmp_path)
    harness = Harness(emulator=emulator, home=tmp_path, api_key=api_key, database_url=database_url)
    yield harness
    harness.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With the switch on Postgres, keep only the tests it changes: those whose harness takes
    the default `database_url` (modules that pick their own database ran in the SQLite leg)."""
    if _switch() != "postgres":
        return
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        switched = _switched(getattr(item, "fixturenames", ()), getattr(item, "module", None))
        (kept if switched else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
