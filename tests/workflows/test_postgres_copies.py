"""The Postgres copies the engine tests start on: a used one comes back as its template made it.

Each worker hands its Postgres engine tests one copy after another (tests/databases.py),
emptied in between rather than made anew; a row or a session left from one test would
change what the next one sees.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from klingflow.emulator import EmulatorServer

from ..databases import PostgresCopies, url_for_database
from .harness import Harness, video_loop


def _rows(url: str) -> dict[str, int]:
    """Each table's row count, but DBOS's record of its migrations (the template's one row)."""
    with psycopg.connect(url) as db:
        tables = db.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname IN ('public', 'dbos') "
            "AND tablename <> 'dbos_migrations'"
        ).fetchall()
        counts = (db.execute(_COUNT.format(sql.Identifier(*table))).fetchone() for table in tables)
        return {
            f"{schema}.{name}": row[0]
            for (schema, name), row in zip(tables, counts, strict=True)
            if row
        }


_COUNT = sql.SQL("SELECT count(*) FROM {}")


def test_a_used_copy_comes_back_without_the_last_tests_rows_or_sessions(
    postgres_schema: PostgresCopies, emulator: EmulatorServer, api_key: str, tmp_path: Path
) -> None:
    name = postgres_schema.take()
    url = url_for_database(postgres_schema.admin_url, name)
    harness = Harness(emulator=emulator, home=tmp_path, api_key=api_key, database_url=url)
    record = harness.run(video_loop("copies"), {"prompts": ["a fox", "a hen"]})
    assert record.status == "completed"
    written = _rows(url)
    assert written["public.kf_runs"] == 1
    assert written["public.kf_node_runs"] >= 3
    assert written["dbos.workflow_status"] >= 2
    left_open = psycopg.connect(url)  # a session the test did not close
    harness.close()

    postgres_schema.give_back(name)
    assert postgres_schema.take() == name  # the same database, handed to the next test
    try:
        with pytest.raises(psycopg.OperationalError):  # the session was ended
            left_open.execute("SELECT 1")
        assert set(_rows(url).values()) == {0}
        with psycopg.connect(url) as db:  # ids start again where the template's did
            assert db.execute("SELECT nextval('kf_node_runs_id_seq')").fetchone() == (1,)
    finally:
        left_open.close()
        postgres_schema.give_back(name)
