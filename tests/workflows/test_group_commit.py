"""The run log's hot-path writes share transactions (group commit) and lose no guarantee."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from klingflow.emulator import EmulatorServer
from klingflow.piapi import Task, TaskStatus
from klingflow.piapi.models import TaskMeta, Usage
from klingflow.piapi.points import usd_to_points
from klingflow.workflows import load_workflow_text
from klingflow.workflows.database import make_engine
from klingflow.workflows.engine import Engine
from klingflow.workflows.group_commit import Write
from klingflow.workflows.records import Intent, IntentState, RunStatus
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.schema import runs
from klingflow.workflows.steering import settle_webhook_cost

from .harness import Harness, video_loop
from .test_transactions import _cut_once

VIDEOS = 24


def _commits(engine: sa.Engine) -> list[int]:
    """A counter of the run log's writing transactions `engine` commits from now on (those
    that insert or update a `kf_` table; DBOS's own and reads are not counted)."""
    counted = [0]

    @event.listens_for(engine, "before_cursor_execute")
    def seen(connection: sa.Connection, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith(("INSERT INTO kf_", "UPDATE kf_")):
            connection.info["kf_write"] = True

    @event.listens_for(engine, "commit")
    def count(connection: sa.Connection) -> None:
        if connection.info.pop("kf_write", False):
            counted[0] += 1

    return counted


def _new_run(runlog: RunLog, budget: str | None = None) -> str:
    run, _ = runlog.create_run(
        workflow_name="group", workflow_hash="0" * 64, workflow={}, source_path=None,
        trigger={}, inputs={}, output_root="/tmp/out",
        budget_usd=None if budget is None else Decimal(budget),
    )  # fmt: skip
    return run.run_id


@pytest.fixture
def grouped_runlog(engine: sa.Engine) -> RunLog:
    """A run log on SQLite (writes grouped on the event loop), then on Postgres (in a
    thread)."""
    return RunLog(engine)


def test_a_loop_of_videos_commits_far_fewer_transactions_than_it_writes_rows(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """Each video writes six or seven run-log rows or updates; in flight together, the
    videos share their transactions instead of paying a COMMIT for each (the database's
    load, and on Postgres the event loop's waits). Everything is still recorded."""
    spec = load_workflow_text(video_loop("group-commit", concurrency=VIDEOS))
    prompts = [f"video {n}" for n in range(VIDEOS)]

    async def work(engine: Engine) -> tuple[Any, int]:
        counted = _commits(engine.runlog.engine)
        run = await engine.start_run(spec, {"prompts": prompts})
        [record] = await engine.wait([run.run_id], timeout_seconds=60)
        return record, counted[0]

    record, commits = harness.session(work, concurrency=VIDEOS)
    assert record.status == RunStatus.COMPLETED, record.message
    assert emulator.stats()["creates"] == VIDEOS
    runlog = harness.runlog()
    intents = runlog.intents(record.run_id)
    assert len(intents) == VIDEOS
    assert {i.state for i in intents} == {IntentState.COMPLETED}
    items = [n for n in runlog.nodes(record.run_id) if n.item_index is not None]
    assert len(items) == VIDEOS
    assert all(n.status == "succeeded" and n.attempts == 1 for n in items)
    # A transaction per write was 6 per video (and a read besides); together, about 3.
    assert commits / VIDEOS < 4.5, f"{commits} run-log transactions for {VIDEOS} videos"


def test_one_failing_write_fails_alone_and_the_others_in_its_batch_land(
    grouped_runlog: RunLog,
) -> None:
    """Writes committed together: one that breaks a constraint gets its error, the rest of
    its batch is committed all the same (each is run again alone)."""
    runlog = grouped_runlog
    run_id = _new_run(runlog, budget="10")
    duplicate = runs.insert().values(
        run_id=run_id, workflow_name="x", workflow_hash="0", workflow={}, trigger={},
        inputs={}, status="queued", epoch=0, output_dir="/tmp", created_at=0.0, updated_at=0.0,
    )  # fmt: skip
    counted = _commits(runlog.engine)

    async def together() -> list[Any]:  # the shared transaction fails: each is run alone
        reserve = [
            runlog.live_or_reserve_soon(
                run_id, 0, f"video{n}", request={"n": n}, estimated_usd=Decimal("1")
            )
            for n in range(3)
        ]
        broken = runlog.write_soon(Write(lambda tx: tx.execute(duplicate)))
        return await asyncio.gather(*reserve[:2], broken, reserve[2], return_exceptions=True)

    first, second, broken, third = asyncio.run(together())
    assert counted[0] == 3
    assert isinstance(broken, sa.exc.IntegrityError)
    assert all(isinstance(intent_id, str) for intent_id in (first, second, third))
    assert {i.intent_id for i in runlog.intents(run_id)} == {first, second, third}
    run = runlog.get_run(run_id)
    assert run is not None
    assert run.reserved_usd == Decimal(3)


def test_writes_queued_together_commit_once(grouped_runlog: RunLog) -> None:
    """Ten nodes starting at once cost one COMMIT, and all ten rows are there."""
    runlog = grouped_runlog
    run_id = _new_run(runlog)
    counted = _commits(runlog.engine)

    async def together() -> None:
        await asyncio.gather(
            *(
                runlog.node_started_soon(
                    run_id,
                    0,
                    f"each[{n}].video",
                    node_id="video",
                    node_type="kling.video",
                    item_index=n,
                    inputs={"n": n},
                )
                for n in range(10)
            )
        )

    asyncio.run(together())
    assert counted[0] == 1
    assert len(runlog.nodes(run_id)) == 10


def test_a_cut_commit_of_a_batch_records_each_intent_once(postgres_url: str) -> None:
    """Postgres: the connection dies during a batch's COMMIT. Whether it landed is unknown;
    each intent is asked for (its `committed` check) and recorded exactly once, with its
    reservation counted once."""
    engine = make_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        runlog = RunLog(engine)
        run_id = _new_run(runlog, budget="100")
        cut = _cut_once(runlog, "commit")

        async def together() -> list[Intent | str | None]:
            return await asyncio.gather(
                *(
                    runlog.live_or_reserve_soon(
                        run_id, 0, f"video{n}", request={"n": n}, estimated_usd=Decimal("2")
                    )
                    for n in range(4)
                )
            )

        intent_ids = asyncio.run(together())
        assert len(cut) == 1
        recorded = runlog.intents(run_id)
        assert sorted(i.intent_id for i in recorded) == sorted(intent_ids)  # type: ignore[type-var]
        run = runlog.get_run(run_id)
        assert run is not None
        assert run.reserved_usd == Decimal(8)
    finally:
        engine.dispose()


def test_a_webhooks_settle_and_its_nodes_settle_commit_together_and_count_once(
    grouped_runlog: RunLog,
) -> None:
    """A confirmed webhook settles a completed task's cost while the node woken by the same
    confirming GET settles it too: both go where the group commits (one transaction, not
    two connections taking the intent's row in turn), and the cost counts once."""
    runlog = grouped_runlog
    run_id = _new_run(runlog, budget="100")
    intent_id = runlog.reserve_and_record(
        run_id, 0, "video", request={"prompt": "a fox"}, estimated_usd=Decimal("2")
    )
    assert isinstance(intent_id, str)
    assert runlog.mark_sent(intent_id)
    runlog.accept_intent(intent_id, run_id=run_id, epoch=0, node_path="video", task_id="t-1")
    spent = usd_to_points(Decimal("1.5"))
    task = Task(
        task_id="t-1", status=TaskStatus.COMPLETED, meta=TaskMeta(usage=Usage(consume=spent))
    )
    counted = _commits(runlog.engine)

    async def both() -> tuple[None, bool]:
        return await asyncio.gather(
            settle_webhook_cost(runlog, task),
            runlog.finish_intent_soon("t-1", IntentState.COMPLETED, spent_points=spent),
        )

    asyncio.run(both())
    assert counted[0] == 1
    [intent] = runlog.intents(run_id)
    assert intent.state is IntentState.COMPLETED
    run = runlog.get_run(run_id)
    assert run is not None
    assert (run.reserved_usd, run.spent_usd) == (Decimal(0), Decimal("1.5"))
