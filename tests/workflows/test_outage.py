"""Postgres cut under a running engine: its own database refuses connections for a while.

The server is never stopped (other tests share it): the test's database stops accepting
connections and its sessions are terminated, then it accepts them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading

import psycopg
import pytest
import sqlalchemy as sa

from klingflow.emulator import EmulatorServer
from klingflow.workflows import load_workflow_text
from klingflow.workflows.engine import Engine
from klingflow.workflows.records import RunRecord, RunStatus
from klingflow.workflows.steering import Action, Command

from ..databases import POSTGRES_ENV
from .harness import Harness, video_loop

LOOP = video_loop("outage")
PROMPTS = ["outage clip 1", "outage clip 2", "outage clip 3"]
SETTLED = (RunStatus.COMPLETED, RunStatus.PAUSED, RunStatus.CRASHED)


@pytest.fixture
def database_url(postgres_url: str) -> str:
    """The harness runs on the test's own Postgres database, the one the test cuts."""
    return postgres_url


def cut(database_url: str, *, is_cut: bool) -> None:
    """Refuse (or accept again) connections to the test's own database."""
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(os.environ[POSTGRES_ENV], autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(not is_cut).lower()}')
        if is_cut:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )


def workflow_status(database_url: str, run_id: str) -> str | None:
    """What DBOS recorded for the run's workflow (None while the database is cut)."""
    with contextlib.suppress(psycopg.OperationalError), psycopg.connect(database_url) as db:
        row = db.execute(
            "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = %s", (run_id,)
        ).fetchone()
        return None if row is None else str(row[0])
    return None


async def settle(
    engine: Engine, database_url: str, run_id: str, *, timeout_seconds: float
) -> RunRecord | None:
    """The run once completed, paused or crashed, or once DBOS ended its workflow in error
    (a crash the run log could not take); reads that fail (the outage) are retried."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    run = None
    while loop.time() < deadline:
        with contextlib.suppress(sa.exc.OperationalError):
            run = engine.runlog.get_run(run_id)
            if run is not None and run.status in SETTLED:
                return run
        if await asyncio.to_thread(workflow_status, database_url, run_id) == "ERROR":
            return run
        await asyncio.sleep(0.1)
    return run


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("outage_seconds", "window_seconds"),
    [(4, 60), (8, 2)],
    ids=["a-blip-within-the-window", "an-outage-beyond-the-window"],
)
def test_a_database_outage_under_a_run_loses_nothing_and_pays_once(
    harness: Harness,
    postgres_url: str,
    emulator: EmulatorServer,
    outage_seconds: float,
    window_seconds: float,
) -> None:
    """Postgres refuses the engine mid-loop. Within KLINGFLOW_DATABASE_OUTAGE_SECONDS the run
    just goes on; beyond it the run crashes and `runs retry` resumes it. Either way every
    video is saved and each is paid once."""
    emulator.configure(processing_seconds=1_500)  # 1.5 s of real time per video at x1000
    workflow = load_workflow_text(LOOP)

    async def work(engine: Engine) -> RunRecord | None:
        run = await engine.start_run(workflow, {"prompts": PROMPTS})
        # Cut once the first create's task id is recorded: a create answered while the
        # database is gone for longer than the window cannot record it, and is `uncertain`
        # after the retry (the documented limit), not what this test is about.
        while not any(i.task_id for i in engine.runlog.intents(run.run_id)):
            await asyncio.sleep(0.02)
        await asyncio.to_thread(cut, postgres_url, is_cut=True)
        # The outage ends on its own clock: the engine may block its loop meanwhile.
        threading.Timer(outage_seconds, cut, (postgres_url,), {"is_cut": False}).start()
        return await settle(engine, postgres_url, run.run_id, timeout_seconds=120)

    run = harness.session(work, database_outage_seconds=window_seconds)
    assert run is not None
    if window_seconds > outage_seconds:
        assert run.status is RunStatus.COMPLETED, run.message  # nobody had to do anything
    else:  # a crash is a pause we could not write
        assert run.status is not RunStatus.COMPLETED
        run = harness.steer(run.run_id, Command(action=Action.RETRY))
    assert run.status is RunStatus.COMPLETED, run.message
    assert emulator.stats()["creates"] == len(PROMPTS)
    assert sorted(p.name for p in harness.home.glob("runs/*/*.mp4")) == ["1.mp4", "2.mp4", "3.mp4"]
