"""The same engine on Postgres, the scale-out database (skipped when none is reachable)."""

from __future__ import annotations

import csv
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from klingflow.emulator import EmulatorServer, FaultRule
from klingflow.workflows import load_workflow
from klingflow.workflows.engine import Command
from klingflow.workflows.runlog import RunStatus

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
