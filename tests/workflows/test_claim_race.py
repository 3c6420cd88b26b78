"""Two processes claiming one node at once record one intent (Postgres, READ COMMITTED)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from klingflow.piapi.models import usd_to_points
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


def test_a_node_claimed_by_two_processes_at_once_gets_one_intent(postgres_url: str) -> None:
    """A worker replaying a run another still runs can reach a node while the other records
    its intent. Each read "no intent yet" and recorded its own, so both were sent: two paid
    tasks for one video. The claim now reserves first (locking the run's budget), so the second
    waits for the first's transaction, then finds its intent and records none."""
    engine = make_engine(postgres_url)
    runlog = RunLog(engine)
    try:
        run, _ = runlog.create_run(
            workflow_name="race", workflow_hash="0" * 64, workflow={}, source_path=None,
            trigger={}, inputs={}, output_root="/tmp/out", budget_usd=None,
        )  # fmt: skip
        first_id = uuid.uuid4().hex
        answers: list[Any] = []
        with engine.connect() as first:  # the first process, in the middle of its claim
            tx = first.begin()
            first.execute(
                run_budgets.update()
                .where(run_budgets.c.run_id == run.run_id)
                .values(reserved_points=run_budgets.c.reserved_points + POINTS)
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
                answers.append(
                    asyncio.run(
                        runlog.live_or_reserve_soon(
                            run.run_id, 0, "video", request={}, estimated_usd=ESTIMATE
                        )
                    )
                )

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
    finally:
        engine.dispose()
