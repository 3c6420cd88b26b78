"""A task id PiAPI answered, which the run database then refused to record, is kept beside
the database, and the resumed run uses it instead of pausing as uncertain (SQLite)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from klingflow.emulator import EmulatorServer
from klingflow.errors import RunLogWriteError
from klingflow.workflows import load_workflow_text
from klingflow.workflows.engine import Engine
from klingflow.workflows.records import IntentState, RunStatus
from klingflow.workflows.rescued_tasks import RESCUE_BYTES, RescuedTasks

from .harness import Harness, video_loop


@pytest.fixture
def database_url() -> None:
    """SQLite: the file is kept beside a SQLite database (Postgres's disk is the server's)."""
    return None


def refuse_task_ids(engine: sa.Engine) -> list[str]:
    """Make the disk full for the write that records a task id (`SET ... task_id=`), as a
    full disk refuses it; what it refused, listed."""
    refused: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def full(_c: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.startswith("UPDATE kf_intents SET") and "task_id=?" in statement:
            refused.append(statement)
            error = sqlite3.OperationalError("database or disk is full")
            raise sa.exc.OperationalError(statement, parameters, error)

    return refused


ONE_VIDEO = """
name: rescue-one
inputs:
  prompts: {type: array, required: true}
nodes:
  - id: video
    type: kling.video
    with: {prompt: "{{ inputs.prompts[0] }}", duration: 5, name: "1.mp4"}
"""
"""The same video as a top-level node: a DBOS step of the run's own, not a loop chunk's."""


@pytest.mark.parametrize("workflow", [video_loop("rescue"), ONE_VIDEO], ids=["loop", "top-level"])
def test_a_task_id_the_database_refused_is_kept_and_the_resumed_run_uses_it(
    harness: Harness, emulator: EmulatorServer, workflow: str
) -> None:
    """PiAPI made the video, then the disk filled up before its task id was recorded: the id
    lived only in memory, so the resumed node found its submission sent with no answer and
    paused as uncertain (a person had to find the task in PiAPI's list). The id is now kept
    in a file whose room was taken at start; the resumed run records it and completes, with
    one create. (DBOS recorded the refusal as the step's or the chunk's error, which a replay
    raised again: the run crashed. The work now stops as at a shutdown, left pending.)"""
    spec = load_workflow_text(workflow)
    kept = harness.home / "klingflow.sqlite-rescued-tasks"

    async def first(engine: Engine) -> tuple[str, list[str]]:
        assert kept.stat().st_size == RESCUE_BYTES  # room taken when the engine started
        refused = refuse_task_ids(engine.runlog.engine)
        run = await engine.start_run(spec, {"prompts": ["a fox"]})
        with pytest.raises(RunLogWriteError, match="database or disk is full"):
            await engine.wait([run.run_id], timeout_seconds=60)
        return run.run_id, refused

    run_id, refused = harness.session(first)
    assert refused
    assert emulator.stats()["creates"] == 1
    [intent] = harness.runlog().intents(run_id)
    assert (intent.state, intent.task_id) == (IntentState.SENT, None)
    [task_id] = emulator.stats()["tasks"]
    assert task_id.encode() in kept.read_bytes()
    assert kept.stat().st_size == RESCUE_BYTES  # written in place: no new room needed

    async def resume(engine: Engine) -> Any:
        [record] = await engine.wait([run_id], timeout_seconds=60)
        return record

    record = harness.session(resume)
    assert record.status is RunStatus.COMPLETED, record.message
    assert emulator.stats()["creates"] == 1
    [intent] = harness.runlog().intents(run_id)
    assert (intent.state, intent.task_id) == (IntentState.COMPLETED, task_id)


def test_a_damaged_file_gives_only_whole_records(tmp_path: Path) -> None:
    """A line cut by a crash, a record without its id, or one that is not an object is passed
    over; the whole record after them is found, and an id not kept is None."""
    kept = RescuedTasks(tmp_path / "klingflow.sqlite")
    kept.reserve()
    lines = (
        b'{"intent_id": "a", "task_\n[1, 2]\n{"intent_id": "a"}\n{"intent_id": "a", "task_id": 7}\n'
    )
    with kept.path.open("r+b") as file:
        file.write(lines)
    assert kept.keep("a", "task-a")
    assert kept.find("a") == "task-a"
    assert kept.find("b") is None
    assert kept.path.stat().st_size == RESCUE_BYTES
