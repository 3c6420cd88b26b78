"""Two processes claiming one node at once record one intent, and claims of different nodes
do not queue behind each other (Postgres, READ COMMITTED)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from klingflow.piapi.models import usd_to_points
from klingflow.workflows import budget_tally
from klingflow.workflows.database import make_engine
from klingflow.workflows.records import Intent, IntentState
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.schema import intents, run_budgets

ESTIMATE = Decimal("0.50")
POINTS = usd_to_points(ESTIMATE)


def _waiting_on_a_lock(engine: sa.Engine) -> int:
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def _create_run(runlog: RunLog, budget_usd: Decimal | None) -> str:
    run, _ = runlog.create_run(
        workflow_name="race", workflow_hash="0" * 64, workflow={}, source_path=None,
        trigger={}, inputs={}, output_root="/tmp/out", budget_usd=budget_usd,
    )  # fmt: skip
    return run.run_id


def _claim(runlog: RunLog, run_id: str, node_path: str) -> Intent | str | None:
    return asyncio.run(
        runlog.live_or_reserve_soon(run_id, 0, node_path, request={}, estimated_usd=ESTIMATE)
    )


@pytest.mark.parametrize("budget_usd", [None, Decimal("10")], ids=["no budget", "budget"])
def test_a_node_claimed_by_two_processes_at_once_gets_one_intent(
    postgres_url: str, budget_usd: Decimal | None
) -> None:
    """A worker replaying a run another still runs can reach a node while the other records
    its intent. Each read "no intent yet" and recorded its own, so both were sent: two paid
    tasks for one video. A node now has one live intent at most (`uq_kf_intents_live`): the
    second's INSERT waits for the first's transaction, then records nothing, and it answers
    the first's intent (a budgeted run's claim waits earlier, on its budget's row)."""
    engine = make_engine(postgres_url)
    runlog = RunLog(engine)
    try:
        run_id = _create_run(runlog, budget_usd)
        run = runlog.get_run(run_id)
        assert run is not None
        first_id = uuid.uuid4().hex
        answers: list[Any] = []
        with engine.connect() as first:  # the first process, in the middle of its claim
            tx = first.begin()
            first.execute(
                run_budgets.update()
                .where(run_budgets.c.run_id == run.run_id)
                .values(
                    reserved_points=run_budgets.c.reserved_points + POINTS,
                    estimated_points=run_budgets.c.estimated_points + POINTS,
                )
            )
            first.execute(
                intents.insert(),
                {
                    "intent_id": first_id, "run_id": run.run_id, "epoch": 0,
                    "node_path": "video", "state": IntentState.PREPARED.value,
                    "request": {}, "estimated_points": POINTS,
                    "created_at": time.time(), "updated_at": time.time(),
                },
            )  # fmt: skip

            def second() -> None:
                answers.append(_claim(runlog, run.run_id, "video"))

            claiming = threading.Thread(target=second)
            claiming.start()
            deadline = time.monotonic() + 30
            while _waiting_on_a_lock(engine) == 0 and claiming.is_alive():
                assert time.monotonic() < deadline, "the second claim never waited"
                time.sleep(0.02)
            tx.commit()
        claiming.join(30)
        [answer] = answers
        assert isinstance(answer, Intent), answer
        assert answer.intent_id == first_id
        assert [i.intent_id for i in runlog.intents(run.run_id)] == [first_id]
        record = runlog.get_run(run.run_id)
        assert record is not None
        assert record.reserved_usd == ESTIMATE  # the second's reservation was given back
        assert record.estimated_usd == ESTIMATE
    finally:
        engine.dispose()


def test_a_claim_does_not_wait_for_another_process_settling_the_same_run(
    postgres_url: str,
) -> None:
    """Workers running one batch settle and claim videos of the same run all the time. A
    settlement used to lock the run's budget row until its group commit ended, so every other
    worker's claim waited for it (three workers ran slower than one). Now a run without a
    budget has its counters added to as a transaction ends: a claim of another node goes
    through while the settling transaction is still open, and both amounts are counted."""
    engine = make_engine(postgres_url)
    runlog = RunLog(engine)
    try:
        run_id = _create_run(runlog, None)
        answers: list[Any] = []
        with budget_tally.begin(engine) as settling:  # another worker's group commit, open
            budget_tally.add(settling, run_id, spent=7)
            settling.execute(sa.select(1))  # its transaction is under way
            claiming = threading.Thread(target=lambda: answers.append(_claim(runlog, run_id, "b")))
            claiming.start()
            claiming.join(30)
            assert not claiming.is_alive(), "the claim waited for another worker's transaction"
            assert _waiting_on_a_lock(engine) == 0
        [intent_id] = answers
        assert isinstance(intent_id, str)
        record = runlog.get_run(run_id)
        assert record is not None
        assert record.reserved_usd == ESTIMATE
        assert record.estimated_usd == ESTIMATE
        assert record.spent_usd == Decimal(7) / 10_000_000  # the open transaction's, sent last
    finally:
        engine.dispose()
