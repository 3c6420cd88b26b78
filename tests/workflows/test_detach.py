"""`klingflow run --detach` only queues: the workers execute every run, none is abandoned."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg
import pytest

from klingflow.emulator import EmulatorServer

from . import preloaded
from .harness import command_env

CLIP = """\
name: clip
inputs:
  prompt: {type: string, required: true}
nodes:
  - id: video
    type: kling.video
    with: {prompt: "{{ inputs.prompt }}", duration: 5}
"""


@pytest.mark.timeout(240)  # long: started first (tests/conftest.py)
def test_detached_runs_are_executed_by_the_worker_alone(
    postgres_url: str,
    emulator: EmulatorServer,
    api_key: str,
    tmp_path: Path,
) -> None:
    """With a worker running on Postgres, `--detach` runs nothing itself: every run is the
    worker's (its executor id in DBOS), completes, and is paid once."""
    env = command_env(
        tmp_path / "home",
        emulator,
        api_key,
        database_url=postgres_url,
        KLINGFLOW_CONCURRENCY="20",
        KLINGFLOW_REQUESTS_PER_MINUTE="100000",
    )
    (tmp_path / "clip.yaml").write_text(CLIP)
    log = tmp_path / "worker.log"

    def detach(batch: int, count: int) -> list[str]:
        rows = tmp_path / f"rows-{batch}.json"
        rows.write_text(json.dumps([{"prompt": f"clip {batch}.{n}"} for n in range(count)]))
        started = preloaded.run(
            ["run", str(tmp_path / "clip.yaml"), "--rows", str(rows), "--detach"],
            env, tmp_path / f"detach-{batch}", check=True,
        )  # fmt: skip
        return started.stdout.split()

    # Enough runs that queueing them takes seconds: long enough for an engine to dequeue some.
    run_ids = detach(0, 30) + detach(1, 4)  # before any worker runs: nobody may execute them
    assert emulator.stats()["create_requests"] == 0
    worker = preloaded.Command(
        ["worker"], {**env, "KLINGFLOW_EXECUTOR_ID": "worker-1"}, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 60
        while "klingflow worker" not in log.read_text():
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the worker never started"
            time.sleep(0.05)
        run_ids += detach(2, 4)  # and while it runs
        assert len(run_ids) == 38
        with psycopg.connect(postgres_url, autocommit=True) as db:
            while True:
                rows_now = db.execute(
                    "select status, count(*) from kf_runs group by status"
                ).fetchall()
                counts: dict[str, int] = {status: count for status, count in rows_now}
                if counts.get("completed") == 38:
                    break
                assert worker.poll() is None, log.read_text()
                if counts.get("crashed"):  # say why, with the worker's log
                    why = db.execute("select message from kf_runs where status = 'crashed'")
                    pytest.fail(f"runs crashed: {why.fetchall()[:3]}\n{log.read_text()[-3000:]}")
                assert time.monotonic() < deadline + 60, f"runs left unfinished: {rows_now}"
                time.sleep(0.2)
            executors = db.execute(
                "select distinct executor_id from dbos.workflow_status where name = 'klingflow.run'"
            ).fetchall()
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert executors == [("worker-1",)]
    assert emulator.stats()["creates"] == 38
