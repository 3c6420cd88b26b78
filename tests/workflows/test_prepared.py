"""The hot path's statements sent to the driver's cursor (workflows/prepared.py) store and
answer exactly what SQLAlchemy's Core execution does, on SQLite and Postgres."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from klingflow.workflows import claims, node_writes
from klingflow.workflows import intents as journal
from klingflow.workflows.database import make_engine
from klingflow.workflows.prepared import execute
from klingflow.workflows.records import Intent, IntentState
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.schema import intents, node_runs

from .conftest import DATABASES


@pytest.fixture(params=DATABASES)
def runlog(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[RunLog]:
    """A run log on a SQLite file, or on a fresh Postgres database through psycopg."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        url = url.replace("postgresql://", "postgresql+psycopg://")
    else:
        url = f"sqlite:///{tmp_path}/log.db"
    engine = make_engine(url)
    yield RunLog(engine)
    engine.dispose()


def _run(runlog: RunLog) -> str:
    run, _ = runlog.create_run(
        workflow_name="prepared", workflow_hash="0" * 64, workflow={}, source_path=None,
        trigger={}, inputs={}, output_root="/tmp/out", budget_usd=Decimal("10"),
    )  # fmt: skip
    return run.run_id


def _both(runlog: RunLog, statement: Any, values: dict[str, Any], **differ: Any) -> list[Any]:
    """`statement` sent with `values` through `execute`, then through Core with `differ`
    changed (another row): their answers (rowcount, rows as dicts)."""
    answers = []
    with runlog.engine.begin() as tx:
        answer = execute(tx, statement, values)
        answers.append((answer.rowcount, [dict(r._mapping) for r in answer.rows]))
        result = tx.execute(statement, {**values, **differ})
        rows = [dict(r._mapping) for r in result] if result.returns_rows else []
        answers.append((result.rowcount, rows))
    return answers


def _stored(runlog: RunLog, table: sa.Table, where: Any) -> list[dict[str, Any]]:
    skip = {"id", "node_path", "intent_id", "task_id"}
    with runlog.engine.connect() as connection:
        query = sa.select(table).where(where).order_by(table.c[table.c.keys()[0]])
        rows = connection.execute(query)
        return [{k: v for k, v in r._mapping.items() if k not in skip} for r in rows]


def test_node_writes_store_what_core_stores(runlog: RunLog) -> None:
    """A node's row written, updated and counted through the cursor equals one written
    through Core: JSON values (a None stored as JSON's null, as Core does), floats, counts."""
    run_id = _run(runlog)
    upsert = node_writes.node_upsert(runlog.engine)
    row = {
        "run_id": run_id, "epoch": 0, "node_path": "a", "node_id": "v", "node_type": "kling.video",
        "item_index": 3, "attempts": 0, "status": "running", "inputs": {"prompt": "cow", "n": [1]},
        "started_at": 1.25, "error": None,
    }  # fmt: skip
    _both(runlog, upsert, row, node_path="b")  # (an INSERT's rowcount: nobody reads it)
    where = {"q_run": run_id, "q_epoch": 0, "q_path": "a"}
    done = {"status": "succeeded", "output": {"video": None}, "error": None, "finished_at": 2.5,
            "task_id": "t", "cost_points": 26}  # fmt: skip
    assert _both(runlog, journal.NODE_UPDATE, {**where, **done}, q_path="b") == [(1, []), (1, [])]
    counting = node_writes._NODE_UPDATE_COUNTING
    assert _both(runlog, counting, where, q_path="b") == [(1, []), (1, [])]
    _both(runlog, upsert, row, node_path="b")  # restarted
    first, second = _stored(runlog, node_runs, node_runs.c.run_id == run_id)
    assert first == second
    assert first["inputs"] == {"prompt": "cow", "n": [1]}
    assert first["output"] == {"video": None}
    assert first["attempts"] == 1
    with runlog.engine.connect() as connection:  # JSON null, not SQL NULL, as Core stores it
        nulls = connection.execute(
            sa.select(sa.func.count()).where(node_runs.c.error.is_(None))
        ).scalar_one()
    assert nulls == 0


def test_intent_statements_answer_what_core_answers(runlog: RunLog) -> None:
    """The journal's statements through the cursor: the same rowcounts, the same rows (the
    live intent with its JSON request, a RETURNING's values), the same budget."""
    run_id = _run(runlog)
    now = time.time()
    for path in ("a", "b"):
        row = {
            "intent_id": f"i-{path}", "run_id": run_id, "epoch": 0, "node_path": path,
            "state": IntentState.PREPARED.value, "request": {"prompt": "cow", "x": None},
            "estimated_points": 26, "created_at": now, "updated_at": now,
        }  # fmt: skip
        insert = claims._insert_unless_live(runlog.engine.dialect.name)
        with runlog.engine.begin() as tx:
            if path == "a":
                assert execute(tx, insert, row).rowcount == 1
                # a second live intent for the node: not recorded
                assert execute(tx, insert, {**row, "intent_id": "i-a2"}).rowcount == 0
            else:  # (Core's rowcount on Postgres is -1: it asks for the primary key back)
                tx.execute(insert, row)
    live = {"q_run": run_id, "q_epoch": 0, "q_path": "a"}
    [(_, rows_a), (_, rows_b)] = _both(runlog, claims._LIVE_INTENT, live, q_path="b")
    assert len(rows_a) == len(rows_b) == 1
    assert {**rows_a[0], "intent_id": "", "node_path": ""} == {
        **rows_b[0],
        "intent_id": "",
        "node_path": "",
    }
    with runlog.engine.connect() as connection:
        answer = execute(connection, claims._LIVE_INTENT, live)
    assert answer.first().request == {"prompt": "cow", "x": None}  # JSON read back
    intent = Intent.from_row(answer.first())
    assert (intent.intent_id, intent.state, intent.estimated_usd) == (
        "i-a",
        IntentState.PREPARED,
        runlog.intent_by_id("i-a")[1].estimated_usd,  # type: ignore[index]
    )
    reserve = {"q_run": run_id, "q_points": 26}
    assert _both(runlog, claims._RESERVE, reserve) == [(1, []), (1, [])]
    run = runlog.get_run(run_id)
    assert run is not None
    budget = reserve | {"q_points": 10**9}  # over the budget: reserved by neither
    assert _both(runlog, claims._RESERVE, budget) == [(0, []), (0, [])]
    assert runlog.get_run(run_id) == run
    for path in ("a", "b"):
        bind = {"q_intent": f"i-{path}", "q_task": f"t-{path}", "task_id": f"t-{path}",
                "updated_at": now}  # fmt: skip
        with runlog.engine.begin() as tx:
            if path == "a":
                assert execute(tx, journal._BIND_TASK, bind).rowcount == 1
                # the same task for another intent: not bound
                taken = {**bind, "q_intent": "i-b"}
                assert execute(tx, journal._BIND_TASK, taken).rowcount == 0
            else:
                assert tx.execute(journal._BIND_TASK, bind).rowcount == 1
    close = {"q_task": "t-a", "state": IntentState.COMPLETED.value, "updated_at": now}
    # A RETURNING's rows (its rowcount, which nobody reads, Core gives as 0 on SQLite)
    closed = _both(runlog, journal._CLOSE_ACCEPTED, close, q_task="t-b")
    assert [rows for _, rows in closed] == [[{"run_id": run_id, "estimated_points": 26}]] * 2
    closed = _both(runlog, journal._CLOSE_ACCEPTED, close, q_task="t-b")
    assert [rows for _, rows in closed] == [[], []]  # closed once
    assert _stored(runlog, intents, intents.c.run_id == run_id)[0]["state"] == "completed"


def test_a_driver_error_is_raised_as_core_raises_it(runlog: RunLog) -> None:
    """A constraint broken through the cursor raises SQLAlchemy's `IntegrityError`, as
    through Core, so the run log's retries and callers tell errors apart as before."""
    run_id = _run(runlog)
    row = {
        "intent_id": "same", "run_id": run_id, "epoch": 0, "node_path": "a", "state": "prepared",
        "request": {}, "estimated_points": 1, "created_at": 1.0, "updated_at": 1.0,
    }  # fmt: skip
    with runlog.engine.begin() as tx:
        execute(tx, intents.insert(), row)
    with pytest.raises(sa.exc.IntegrityError), runlog.engine.begin() as tx:
        execute(tx, intents.insert(), row)
