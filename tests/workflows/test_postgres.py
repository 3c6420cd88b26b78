"""The same engine on Postgres, the scale-out database (skipped when none is reachable)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from klingflow.emulator import EmulatorServer, FaultRule
from klingflow.workflows import load_workflow
from klingflow.workflows.database import make_engine
from klingflow.workflows.engine import Command
from klingflow.workflows.runlog import RunLog, RunStatus

from .harness import Harness

POSTGRES_ENV = "KLINGFLOW_TEST_POSTGRES_URL"
EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty database on the server named by KLINGFLOW_TEST_POSTGRES_URL."""
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        pytest.skip(f"{POSTGRES_ENV} is not set: no Postgres server to test against")
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        pytest.skip(f"Postgres at {POSTGRES_ENV} is not reachable: {error}")
    name = f"kf_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield admin_url.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def harness(emulator: EmulatorServer, tmp_path: Path, api_key: str, postgres_url: str) -> Harness:
    return Harness(emulator=emulator, home=tmp_path, api_key=api_key, database_url=postgres_url)


def rows() -> list[dict[str, str]]:
    with (EXAMPLES / "prompts.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_batch_runs_on_postgres_and_a_paused_item_retries(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """The batch pauses on a failed item and completes after a retry, all on Postgres."""
    emulator.add_fault(FaultRule(action="fail_task"))
    run = harness.run(load_workflow(EXAMPLES / "batch-from-csv.yaml"), {"rows": rows()})
    assert run.status == RunStatus.PAUSED
    assert emulator.stats()["creates"] == 5
    done = harness.steer(run.run_id, Command(action="retry"))
    assert done.status == RunStatus.COMPLETED, done.message
    assert emulator.stats()["creates"] == 6
    assert len(done.outputs["videos"]) == 5


def test_idempotency_key_holds_on_postgres(harness: Harness, emulator: EmulatorServer) -> None:
    """One key, one run, one payment, on Postgres too."""
    text = "name: keyed\nnodes:\n  - {id: clip, type: kling.video, with: {prompt: a fox}}\n"
    first = harness.run(text, idempotency_key="k")
    second = harness.run(text, idempotency_key="k")
    assert first.run_id == second.run_id
    assert first.status == RunStatus.COMPLETED
    assert emulator.stats()["creates"] == 1


def test_two_workers_share_a_batch_on_postgres(
    postgres_url: str, emulator: EmulatorServer, api_key: str, tmp_path: Path
) -> None:
    """Two `klingflow worker` processes drain one detached batch of 100; each video is paid once."""
    env = {
        **os.environ,
        "KLINGFLOW_HOME": str(tmp_path / "home"),
        "KLINGFLOW_DATABASE_URL": postgres_url,
        "PIAPI_BASE_URL": emulator.url,
        "PIAPI_API_KEY": api_key,
        "KLINGFLOW_POLL_SECONDS": "0.05",
        "KLINGFLOW_CONCURRENCY": "20",  # per worker: the account's limit / 2
        "KLINGFLOW_REQUESTS_PER_MINUTE": "100000",
    }
    klingflow = [sys.executable, "-m", "klingflow"]
    rows_file = tmp_path / "rows.json"
    rows_file.write_text(json.dumps([{"prompt": f"clip {n}", "slug": f"c{n}"} for n in range(100)]))
    workflow = (
        (EXAMPLES / "batch-from-csv.yaml").read_text().replace("budget_usd: 5", "budget_usd: 100")
    )
    (tmp_path / "batch.yaml").write_text(workflow.replace("concurrency: 5", "concurrency: 20"))
    started = subprocess.run(
        [*klingflow, "run", str(tmp_path / "batch.yaml"), "-i", f"rows=@{rows_file}", "--detach"],
        env=env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    run_id = started.stdout.strip()
    workers = [
        subprocess.Popen(
            [*klingflow, "worker"],
            env={**env, "KLINGFLOW_EXECUTOR_ID": f"worker-{n}"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for n in (1, 2)
    ]
    runlog = RunLog(make_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://")))
    try:
        deadline = time.monotonic() + 90
        while (run := runlog.get_run(run_id)) is None or run.status not in (
            RunStatus.COMPLETED, RunStatus.PAUSED, RunStatus.CRASHED,
        ):  # fmt: skip
            assert time.monotonic() < deadline, "the workers never finished the batch"
            time.sleep(0.5)
        recorded = {n.node_path for n in runlog.nodes(run_id)}
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(timeout=30)
        runlog.engine.dispose()  # the database is dropped next: no connection may linger
    assert run.status == RunStatus.COMPLETED, run.message
    assert len(recorded) == 101  # the loop and its 100 items, each recorded once
    assert emulator.stats()["creates"] == 100
    assert len({t["input"]["prompt"] for t in emulator.tasks()}) == 100
