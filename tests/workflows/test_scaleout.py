"""Scale-out on Postgres: several processes sharing one database (skipped without Postgres)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from .test_postgres import postgres_url  # noqa: F401  (the fixture: a fresh database)

START_TOGETHER = """
import asyncio, os, sys, time
from pathlib import Path
from klingflow.settings import Settings
from klingflow.workflows.engine import Engine
from klingflow.workflows.registry import WorkflowRegistry

go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.005)

async def main() -> None:
    async with Engine(Settings(), executor_id=sys.argv[2]) as engine:
        WorkflowRegistry(engine.runlog.engine)
        print("launched", engine.executor_id, flush=True)

asyncio.run(main())
"""


def test_processes_started_together_on_an_empty_database_all_launch(
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Five processes launched at once on an empty database: none dies creating the schema
    (DBOS's tables, the run log's, the registry's), and the schema is there once."""
    go = tmp_path / "go"
    env = {
        **os.environ,
        "KLINGFLOW_DATABASE_URL": postgres_url,
        "KLINGFLOW_HOME": str(tmp_path / "home"),
        "PIAPI_API_KEY": "test-key-not-used",
    }
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", START_TOGETHER, str(go), f"together-{number}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for number in range(5)
    ]
    go.touch()
    results = [process.communicate(timeout=120) for process in processes]
    failures = [
        f"process {n} exited {p.returncode}: {err[-2000:]}"
        for n, (p, (_, err)) in enumerate(zip(processes, results, strict=True))
        if p.returncode != 0
    ]
    assert not failures, "\n".join(failures)
    assert sorted(out.strip() for out, _ in results) == [f"launched together-{n}" for n in range(5)]
    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"kf_runs", "kf_workflows"} <= tables
