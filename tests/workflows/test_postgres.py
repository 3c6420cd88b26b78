"""The same engine on Postgres, the scale-out database (skipped when none is reachable)."""

from __future__ import annotations

import csv
import itertools
import json
import logging
import re
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from klingflow.emulator import EmulatorServer, FaultRule
from klingflow.workflows import load_workflow
from klingflow.workflows.database import make_engine
from klingflow.workflows.engine import Engine
from klingflow.workflows.records import RunRecord, RunStatus
from klingflow.workflows.registry import WorkflowRegistry
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.schedules import Scheduler
from klingflow.workflows.steering import Action, Command

from . import preloaded
from .harness import Harness, command_env

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture
def database_url(postgres_url: str) -> str:
    """Every `harness` of this module runs on a fresh Postgres database."""
    return postgres_url


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
    done = harness.steer(run.run_id, Command(action=Action.RETRY))
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


@pytest.mark.timeout(240)  # long: started first (tests/conftest.py)
def test_two_workers_share_a_batch_on_postgres(
    postgres_url: str, emulator: EmulatorServer, api_key: str, tmp_path: Path
) -> None:
    """Two `klingflow worker` processes drain one detached batch of 100; each video is paid once."""
    env = command_env(
        tmp_path / "home",
        emulator,
        api_key,
        database_url=postgres_url,
        KLINGFLOW_CONCURRENCY="20",  # per worker: the account's limit / 2
        KLINGFLOW_REQUESTS_PER_MINUTE="100000",
    )
    rows_file = tmp_path / "rows.json"
    rows_file.write_text(json.dumps([{"prompt": f"clip {n}", "slug": f"c{n}"} for n in range(100)]))
    workflow = (
        (EXAMPLES / "batch-from-csv.yaml").read_text().replace("budget_usd: 5", "budget_usd: 100")
    )
    (tmp_path / "batch.yaml").write_text(workflow.replace("concurrency: 5", "concurrency: 20"))
    started = preloaded.run(
        ["run", str(tmp_path / "batch.yaml"), "-i", f"rows=@{rows_file}", "--detach"],
        env, tmp_path / "detach", check=True,
    )  # fmt: skip
    run_id = started.stdout.strip()
    workers = [
        preloaded.Command(
            ["worker"],
            {**env, "KLINGFLOW_EXECUTOR_ID": f"worker-{n}"},
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


def test_two_workers_fire_each_tick_of_a_schedule_once_on_postgres(
    postgres_url: str, emulator: EmulatorServer, api_key: str, tmp_path: Path
) -> None:
    """Two `klingflow worker`s both fire a published every-2-seconds schedule of a paid video:
    one run a tick, each paid once. (The URL carries a password, which the local server's trust
    auth ignores: no log shows it.)"""
    password = "kf-pg-password-5e1d"
    env = command_env(
        tmp_path / "home",
        emulator,
        api_key,
        database_url=re.sub(r"^(postgresql://[^@:/]+)@", rf"\1:{password}@", postgres_url),
    )
    (tmp_path / "ticker.yaml").write_text(
        "name: ticker\n"
        "inputs:\n  who: {type: string, required: true}\n"
        "nodes:\n"
        "  - id: clip\n"
        "    type: kling.video\n"
        "    with: {prompt: '{{ inputs.who }} at dusk', download: false}\n"
        "schedules:\n  - {cron: '* * * * * */2', name: often, payload: {who: cron}}\n"
    )
    published = preloaded.run(
        ["publish", str(tmp_path / "ticker.yaml")], env, tmp_path / "publish", check=True
    )
    assert published.stdout.split()[::2] == ["ticker", "published"]
    logs = [tmp_path / f"worker-{n}.log" for n in (1, 2)]
    workers: list[preloaded.Command] = []
    runlog = RunLog(make_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://")))
    try:
        for n, log in enumerate(logs, start=1):  # one at a time: DBOS migrates a fresh database
            workers.append(
                preloaded.Command(
                    ["worker"],
                    {**env, "KLINGFLOW_EXECUTOR_ID": f"worker-{n}"},
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            )
            deadline = time.monotonic() + 60
            while "klingflow worker" not in log.read_text():
                assert workers[-1].poll() is None, log.read_text()
                assert time.monotonic() < deadline, "a worker never started"
                time.sleep(0.1)
        both_up = time.time()
        deadline = time.monotonic() + 60
        while len([r for r in runlog.list_runs() if r.created_at > both_up + 0.5]) < 2:
            assert time.monotonic() < deadline, "the schedule never fired twice"
            time.sleep(0.2)
        # Stop the schedule with a version without it: each worker checks the latest version
        # just before starting a tick's run, so none starts after this (a margin for a start
        # already past its check), and the count of paid videos can be compared.
        without = (tmp_path / "ticker.yaml").read_text().split("schedules:")[0]
        WorkflowRegistry(runlog.engine).publish(without)
        time.sleep(1.0)
        run_ids = [run.run_id for run in runlog.list_runs(limit=1000)]
        settled = {RunStatus.COMPLETED, RunStatus.PAUSED, RunStatus.CRASHED}
        deadline = time.monotonic() + 60
        while any(r.status not in settled for r in map(runlog.get_run, run_ids) if r):
            assert time.monotonic() < deadline, "the runs never finished"
            time.sleep(0.2)
        runs = [r for r in map(runlog.get_run, run_ids) if r is not None]
        assert all(worker.poll() is None for worker in workers)
        assert len(runlog.list_runs(limit=1000)) == len(runs)  # none started since
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(timeout=30)
        runlog.engine.dispose()  # the database is dropped next: no connection may linger
    keys = [str(run.idempotency_key) for run in runs]
    assert all(key.startswith("schedule:ticker:often:") for key in keys)
    ticks = sorted(datetime.fromisoformat(key.split(":", 3)[3]) for key in keys)
    assert len(set(ticks)) == len(ticks)  # one run per tick
    assert all(b - a == timedelta(seconds=2) for a, b in itertools.pairwise(ticks))  # no gap
    assert {run.status for run in runs} == {RunStatus.COMPLETED}
    assert all(run.trigger == {"who": "cron"} for run in runs)
    assert emulator.stats()["creates"] == len(runs)  # each tick's video paid once
    assert password in env["KLINGFLOW_DATABASE_URL"]
    for log in logs:
        assert "Traceback" not in log.read_text()
        assert "klingflow worker" in log.read_text()
        assert password not in log.read_text()


def test_a_schedule_the_database_refuses_does_not_stop_the_others_on_postgres(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Postgres refuses a run whose budget overflows its bigint column (a DataError, not a
    klingflow error): that schedule is logged and skipped, and the other one fires."""
    note = "nodes:\n  - {id: note, type: set, with: {values: {a: 1}}}\nschedules:\n"
    huge = "name: huge\nbudget_usd: 1e30\n" + note + "  - {cron: '* * * * *', name: huge}\n"
    good = "name: good\n" + note + "  - {cron: '* * * * *', name: fine}\n"
    start = datetime(2030, 1, 1, tzinfo=UTC)
    caplog.set_level(logging.ERROR, logger="klingflow.schedules")

    async def work(engine: Engine) -> list[RunRecord]:
        registry = WorkflowRegistry(engine.runlog.engine)
        registry.publish_all([huge, good])
        scheduler = Scheduler(engine, registry, grace_seconds=3600)
        await scheduler.fire_due(start)
        runs = await scheduler.fire_due(start + timedelta(minutes=2))
        return await engine.wait([run.run_id for run in runs], timeout_seconds=60)

    runs = harness.session(work)
    assert [run.idempotency_key for run in runs] == [
        "schedule:good:fine:2030-01-01T00:01:00Z",
        "schedule:good:fine:2030-01-01T00:02:00Z",
    ]
    assert {run.status for run in runs} == {RunStatus.COMPLETED}
    [error] = [record.getMessage() for record in caplog.records]
    assert error.startswith(
        "schedule huge:huge: the run of schedule:huge:huge:2030-01-01T00:01:00Z was not "
        "started, unexpected DataError: "
    )
