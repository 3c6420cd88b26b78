"""Postgres outages as long as the window a user has, and beyond it with items in flight.

Issue #10's Done-when asks for a 60 s outage literally: the test's own database refuses
connections (the server is never stopped) for as long as KLINGFLOW_DATABASE_OUTAGE_SECONDS
is by default. docs/workflows.md promises that the run rides it out, or (the limit: an
outage that outlasts a database call's window) ends `crashed` and one `runs retry` resumes it;
either way nothing paid is lost or paid twice, and a crashed run sends nothing more. The
60 s test is mostly idle (everyone sleeps through the outage): its long `timeout` makes
pytest start it first (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from klingflow.emulator import EmulatorServer
from klingflow.workflows import load_workflow_text
from klingflow.workflows.database import DEFAULT_OUTAGE_SECONDS
from klingflow.workflows.engine import Engine
from klingflow.workflows.records import IntentState, RunRecord, RunStatus
from klingflow.workflows.steering import Action, Command

from .harness import Harness, video_loop
from .test_outage import cut, settle, workflow_status

PROMPTS = [f"outage window clip {n}" for n in range(1, 5)]
WORKFLOW = load_workflow_text(video_loop("outage-window", concurrency=2))


@pytest.fixture
def database_url(postgres_url: str) -> str:
    """The harness runs on the test's own Postgres database, the one the test cuts."""
    return postgres_url


def cut_for(postgres_url: str, seconds: float) -> tuple[threading.Thread, float]:
    """Cut the database now; it comes back after `seconds` on its own clock (the engine may
    block its event loop meanwhile). Join the thread to wait for the end of the outage; the
    float is when it began (`time.monotonic`, read as the cut was made, not once the event
    loop got round to it)."""
    cut(postgres_url, is_cut=True)
    began = time.monotonic()
    back = threading.Timer(seconds, cut, (postgres_url,), {"is_cut": False})
    back.start()
    return back, began


async def until_two_task_ids_recorded(harness: Harness, run_id: str) -> None:
    """Until the first two creates' answers are in the run log: a create answered while the
    database is cut for longer than the window cannot record its task id (the submission
    is `uncertain`, the honest limit), which is not what these tests are about."""
    runlog = harness.runlog()
    while sum(1 for i in await asyncio.to_thread(runlog.intents, run_id) if i.task_id) < 2:
        await asyncio.sleep(0.02)


def assert_crashed(run: RunRecord, postgres_url: str) -> None:
    """`crashed`, or still `running` in the run log when the database could not take even
    that (DBOS has ended the workflow in error; `runs retry` records the crash first)."""
    if run.status is RunStatus.RUNNING:
        assert workflow_status(postgres_url, run.run_id) == "ERROR", run
    else:
        assert run.status is RunStatus.CRASHED, run.message


def assert_every_video_paid_once(harness: Harness, emulator: EmulatorServer, run_id: str) -> None:
    assert emulator.stats()["creates"] == len(PROMPTS)
    assert sorted(t["input"]["prompt"] for t in emulator.tasks()) == PROMPTS
    files = sorted(p.name for p in harness.home.glob("runs/*/*.mp4"))
    assert files == [f"{n}.mp4" for n in range(1, len(PROMPTS) + 1)]
    states = [i.state for i in harness.runlog().intents(run_id)]
    assert states == [IntentState.COMPLETED] * len(PROMPTS)


@pytest.mark.timeout(420)
def test_a_60_second_outage_with_the_default_window_delivers_every_video_once(
    harness: Harness,
    postgres_url: str,
    emulator: EmulatorServer,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Postgres refuses every connection for 60 s while 2 of 4 videos generate. Once it is
    back the run completes by itself, or (the documented limit) it ended `crashed` and one
    `runs retry` completes it: 4 creates for 4 videos, 4 files, nothing left `uncertain`."""
    assert DEFAULT_OUTAGE_SECONDS == 60  # the literal case: as long as the default window
    emulator.configure(processing_seconds=5_000)  # 5 s of real time per video at x1000
    outage: dict[str, float] = {}

    async def work(engine: Engine) -> RunRecord | None:
        run = await engine.start_run(WORKFLOW, {"prompts": PROMPTS})
        await until_two_task_ids_recorded(harness, run.run_id)
        back, outage["began"] = await asyncio.to_thread(
            cut_for, postgres_url, DEFAULT_OUTAGE_SECONDS
        )
        # Read nothing until it is over: a read on this loop would block the engine too.
        await asyncio.to_thread(back.join)
        outage["ended"] = time.monotonic()
        return await settle(engine, postgres_url, run.run_id, timeout_seconds=90)

    run = harness.session(work)  # the settings a user has: no outage window given
    assert outage["ended"] - outage["began"] >= DEFAULT_OUTAGE_SECONDS
    assert run is not None
    # The engine said why it waited, once, not once per attempt of each thread.
    notices = [r.getMessage() for r in caplog.records if "database" in r.getMessage()]
    assert [n.split(" (")[0] for n in notices] == ["database unreachable"], notices
    if run.status is RunStatus.COMPLETED:  # nobody had to do anything, nothing alarming
        stderr = capfd.readouterr().err  # DBOS logs there, tracebacks included
        assert "Traceback" not in stderr, stderr
        assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    else:  # what the docs tell the user to do
        assert_crashed(run, postgres_url)
        run = harness.steer(run.run_id, Command(action=Action.RETRY))
    assert run.status is RunStatus.COMPLETED, run.message
    assert_every_video_paid_once(harness, emulator, run.run_id)


def test_a_run_crashed_by_an_outage_beyond_the_window_sends_nothing_more(
    harness: Harness, postgres_url: str, emulator: EmulatorServer
) -> None:
    """A 3 s window, an 8 s outage, 2 items generating and 2 waiting: the first item that
    cannot record its video ends the run `crashed`, and its loop starts no other item (it
    went on creating the next videos for a run nobody was watching, racing its `runs retry`).
    The retry then completes the run, each video paid once."""
    emulator.configure(processing_seconds=2_000)  # 2 s of real time per video at x1000
    seen: dict[str, int] = {}

    async def work(engine: Engine) -> RunRecord | None:
        run = await engine.start_run(WORKFLOW, {"prompts": PROMPTS})
        await until_two_task_ids_recorded(harness, run.run_id)
        back, _ = await asyncio.to_thread(cut_for, postgres_url, 8)
        await asyncio.to_thread(back.join)  # reading nothing meanwhile, as above
        crashed = await settle(engine, postgres_url, run.run_id, timeout_seconds=60)
        seen["when crashed"] = emulator.stats()["creates"]
        await asyncio.sleep(2)  # a worker stays up after one of its runs crashed
        seen["later"] = emulator.stats()["creates"]
        return crashed

    run = harness.session(work, database_outage_seconds=3)
    assert run is not None
    assert seen == {"when crashed": 2, "later": 2}
    assert_crashed(run, postgres_url)
    run = harness.steer(run.run_id, Command(action=Action.RETRY))
    assert run.status is RunStatus.COMPLETED, run.message
    assert_every_video_paid_once(harness, emulator, run.run_id)
