"""A node has one live submission at most, kept by the run log itself (`uq_kf_intents_live`);
a run log written by an older klingflow gets the index when it is opened."""

from __future__ import annotations

import logging
import time
from decimal import Decimal

import pytest
import sqlalchemy as sa

from klingflow.workflows.records import IntentState
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.schema import intents

INDEX = "uq_kf_intents_live"


def _indexes(engine: sa.Engine) -> set[str]:
    return {str(index["name"]) for index in sa.inspect(engine).get_indexes("kf_intents")}


def _run_with_a_live_intent(engine: sa.Engine) -> str:
    runlog = RunLog(engine)
    run, _ = runlog.create_run(
        workflow_name="live", workflow_hash="0" * 64, workflow={}, source_path=None,
        trigger={}, inputs={}, output_root="/tmp/out", budget_usd=None,
    )  # fmt: skip
    intent = runlog.reserve_and_record(
        run.run_id, 0, "video", request={}, estimated_usd=Decimal("0.50")
    )
    assert intent is not None
    return run.run_id


def _drop_index(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP INDEX {INDEX}"))
    assert INDEX not in _indexes(engine)


def test_an_older_run_log_gets_the_index_when_opened(engine: sa.Engine) -> None:
    run_id = _run_with_a_live_intent(engine)
    _drop_index(engine)
    reopened = RunLog(engine)
    assert INDEX in _indexes(engine)
    assert [i.node_path for i in reopened.intents(run_id)] == ["video"]


def test_an_older_run_log_holding_two_live_intents_for_a_node_still_opens(
    engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows the index forbids (two live submissions of one node, which only a bug of an
    older klingflow could write) leave the index out, with a warning, and lose nothing."""
    run_id = _run_with_a_live_intent(engine)
    _drop_index(engine)
    with engine.begin() as connection:
        connection.execute(
            intents.insert(),
            {
                "intent_id": "second", "run_id": run_id, "epoch": 0, "node_path": "video",
                "state": IntentState.SENT.value, "request": {}, "estimated_points": 1,
                "created_at": time.time(), "updated_at": time.time(),
            },
        )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="klingflow.database"):
        reopened = RunLog(engine)
    assert f"the run log's index {INDEX} was not created" in caplog.text
    assert INDEX not in _indexes(engine)
    assert len(reopened.intents(run_id)) == 2
    assert reopened.get_run(run_id) is not None
