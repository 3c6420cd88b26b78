"""`Engine.wait` looks at the runs' statuses, not their records, until they settle."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from klingflow.emulator import EmulatorServer
from klingflow.workflows import load_workflow_text
from klingflow.workflows.engine import Engine
from klingflow.workflows.records import RunStatus

from .harness import Harness, video_loop


def _run_reads(engine: sa.Engine) -> dict[str, int]:
    """Counts of the SELECTs on `kf_runs` from now on: whole records, and statuses alone."""
    counted = {"record": 0, "status": 0}

    @event.listens_for(engine, "before_cursor_execute")
    def seen(_connection: sa.Connection, _cursor: Any, statement: str, *_: Any) -> None:
        statement = " ".join(statement.split())
        head = statement.split(" FROM ", 1)[0]
        if " FROM kf_runs" not in statement or not head.startswith("SELECT"):
            return
        if "trigger" in head:  # quoted: a reserved word
            counted["record"] += 1
        elif head.strip() == "SELECT kf_runs.run_id, kf_runs.status":
            counted["status"] += 1

    return counted


def test_waiting_on_a_run_reads_its_status_not_its_whole_record(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """A run's record holds its whole trigger (a batch's every prompt): `klingflow run` and
    the bench looked at it five times a second while the run worked. The look reads the
    status alone; the record is read once the run has settled."""
    emulator.configure(pending_seconds=0, processing_seconds=3)
    spec = load_workflow_text(video_loop("wait-look", concurrency=2))

    async def work(engine: Engine) -> tuple[Any, dict[str, int]]:
        run = await engine.start_run(spec, {"prompts": ["a", "b"]})
        counted = _run_reads(engine.runlog.engine)
        [record] = await engine.wait([run.run_id], poll_seconds=0.02, timeout_seconds=60)
        return record, counted

    record, counted = harness.session(work, concurrency=2)
    assert record.status == RunStatus.COMPLETED, record.message
    assert counted["status"] >= 20, counted  # it did look, often, while the run worked
    assert counted["record"] <= 5, counted  # the engine's own reads, and the last look
