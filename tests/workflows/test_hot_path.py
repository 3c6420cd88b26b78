"""What the run log costs a video on the engine's hot path: statements and transactions.

Each run-log statement costs tens of microseconds of SQLAlchemy on the event loop that also
drives every HTTP request (bench/engine.py, docs/benchmarks.md section 4), so the number a
video pays is what the engine's overhead is held to here; the speed itself is measured by
the bench, never asserted. Everything a video must record is still checked.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from klingflow.emulator import EmulatorServer
from klingflow.workflows import load_workflow_text
from klingflow.workflows.engine import Engine
from klingflow.workflows.records import IntentState, RunStatus

from .harness import Harness, video_loop

VIDEOS = 20
HOT_TABLES = ("kf_intents", "kf_node_runs", "kf_attempts")


def _hot_path_counter(engine: sa.Engine) -> dict[str, int]:
    """Counts, from now on, the statements on a node's tables (intents, nodes, attempts), the
    writes of the run's budget and row, and the transactions that ran any of them.
    DBOS's statements and the run's own reads (waiting for it) are not counted."""
    counted = {"statements": 0, "transactions": 0, "run_row_writes": 0}

    @event.listens_for(engine, "before_cursor_execute")
    def seen(connection: sa.Connection, _cursor: Any, statement: str, *_: Any) -> None:
        run_row = statement.startswith("UPDATE kf_runs ")
        counted["run_row_writes"] += run_row
        budget = statement.startswith("UPDATE kf_run_budgets ")
        if run_row or budget or any(table in statement for table in HOT_TABLES):
            counted["statements"] += 1
            connection.info["kf_hot"] = True

    @event.listens_for(engine, "commit")
    def commit(connection: sa.Connection) -> None:
        if connection.info.pop("kf_hot", False):
            counted["transactions"] += 1

    return counted


def test_a_video_costs_eleven_run_log_statements_and_every_record_is_kept(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """A video used to cost 13 statements in 7 transactions (the intent read apart from its
    reservation, the task id's owner read before binding it, the finished intent read before
    closing it); now 11 (and 6 transactions on SQLite, which commits each write alone). The
    journal still records every intent before its create and closes it once, settled."""
    spec = load_workflow_text(video_loop("hot-path", concurrency=VIDEOS))
    prompts = [f"video {n}" for n in range(VIDEOS)]

    async def work(engine: Engine) -> tuple[Any, dict[str, int]]:
        counted = _hot_path_counter(engine.runlog.engine)
        run = await engine.start_run(spec, {"prompts": prompts})
        [record] = await engine.wait([run.run_id], timeout_seconds=60)
        return record, dict(counted)

    record, counted = harness.session(work, concurrency=VIDEOS)
    assert record.status == RunStatus.COMPLETED, record.message
    assert emulator.stats()["creates"] == VIDEOS
    runlog = harness.runlog()
    intents = runlog.intents(record.run_id)
    assert len(intents) == VIDEOS
    assert {i.state for i in intents} == {IntentState.COMPLETED}
    assert len({i.task_id for i in intents}) == VIDEOS
    items = [n for n in runlog.nodes(record.run_id) if n.item_index is not None]
    assert all(n.status == "succeeded" and n.task_id for n in items)
    assert len(runlog.attempts(record.run_id)) >= VIDEOS
    run = runlog.get_run(record.run_id)
    assert run is not None
    assert run.reserved_usd == 0  # every reservation settled, once
    assert run.spent_usd > 0
    # The run's row holds its trigger and inputs (megabytes for a big batch), which SQLite
    # rewrites on every UPDATE: it is written when the run's status changes, never per video.
    assert counted["run_row_writes"] <= 3, f"{counted['run_row_writes']} writes of the run's row"
    # The loop node's own rows and the chunks' reads add a few for the whole run.
    statements = counted["statements"] / VIDEOS
    assert statements <= 11.5, f"{counted['statements']} statements for {VIDEOS} videos"
    if harness.database_url is None:  # on Postgres the writes of videos in flight share them
        transactions = counted["transactions"] / VIDEOS
        assert transactions <= 6.5, f"{counted['transactions']} transactions for {VIDEOS} videos"
