"""Run-log transactions on Postgres survive their connection being cut (issue #12)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from klingflow.workflows.database import make_engine
from klingflow.workflows.records import IntentState, RunStatus
from klingflow.workflows.runlog import RunLog


@pytest.fixture
def runlog(postgres_url: str) -> Iterator[RunLog]:
    """A run log on a fresh Postgres database, through psycopg as the product connects."""
    engine = make_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    yield RunLog(engine)
    engine.dispose()


def _new_run(runlog: RunLog) -> str:
    run, _ = runlog.create_run(
        workflow_name="cut", workflow_hash="0" * 64, workflow={}, source_path=None,
        trigger={}, inputs={}, output_root="/tmp/out", budget_usd=None,
    )  # fmt: skip
    return run.run_id


def _cut_once(runlog: RunLog, moment: str, statement: str | None = None) -> list[int]:
    """Terminate the backend of the connection in use, once: before a statement that
    starts with `statement` (moment "before_cursor_execute") or before a COMMIT ("commit").
    Returns the list the cut backends' pids are added to."""
    cut: list[int] = []
    admin_url = runlog.engine.url.set(drivername="postgresql").render_as_string(False)

    def terminate(connection: sa.Connection) -> None:
        pid = connection.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))  # waits for it
        cut.append(pid)

    if moment == "commit":

        @event.listens_for(runlog.engine, "commit")
        def before_commit(connection: sa.Connection) -> None:
            if not cut:
                terminate(connection)

    else:

        @event.listens_for(runlog.engine, "before_cursor_execute")
        def before_execute(connection: sa.Connection, _c: Any, text: str, *_: Any) -> None:
            if not cut and statement is not None and text.startswith(statement):
                terminate(connection)

    return cut


def test_a_write_cut_mid_transaction_is_run_again(runlog: RunLog) -> None:
    """A run's status update whose connection dies under it is written on a new connection."""
    run_id = _new_run(runlog)
    cut = _cut_once(runlog, "before_cursor_execute", "UPDATE kf_runs")
    runlog.set_status(run_id, RunStatus.PAUSED, message="waiting")
    assert cut
    run = runlog.get_run(run_id)
    assert run is not None
    assert run.status == RunStatus.PAUSED


def test_a_read_cut_mid_transaction_is_asked_again(runlog: RunLog) -> None:
    """A listing whose connection dies under it answers from a new connection."""
    run_id = _new_run(runlog)
    cut = _cut_once(runlog, "before_cursor_execute", "SELECT kf_runs.run_id")
    assert [run.run_id for run in runlog.list_runs()] == [run_id]
    assert cut


def test_a_cut_commit_is_done_again_once_when_it_did_not_land(runlog: RunLog) -> None:
    """An attempt whose COMMIT was cut is looked for, then recorded again: counted once."""
    run_id = _new_run(runlog)
    runlog.node_started(run_id, 0, "a", node_id="a", node_type="set", item_index=None, inputs=None)
    cut = _cut_once(runlog, "commit")
    runlog.add_attempt(
        run_id, 0, "a", number=1, started_at=1.5, error={"message": "boom"}, retry_in_seconds=1.0
    )
    assert cut
    assert [a.number for a in runlog.attempts(run_id)] == [1]
    assert [n.attempts for n in runlog.nodes(run_id)] == [1]


def test_a_cut_commit_of_a_write_that_cannot_tell_raises(runlog: RunLog) -> None:
    """Settling money after a cut COMMIT is not guessed at: the error reaches the caller."""
    run_id = _new_run(runlog)
    _cut_once(runlog, "commit")
    with pytest.raises(sa.exc.OperationalError):
        runlog.settle(run_id, reserved_usd=Decimal(0), spent_usd=Decimal(1))


def test_a_hot_path_write_cut_mid_statement_is_run_again(runlog: RunLog) -> None:
    """The hot path's statements go to the driver's cursor (workflows/prepared.py): one
    whose connection dies under it is still translated, and run again on a new one."""
    run_id = _new_run(runlog)
    intent_id = runlog.reserve_and_record(
        run_id, 0, "a", request={"prompt": "cow"}, estimated_usd=Decimal("0.26")
    )
    assert intent_id is not None
    cut = _cut_once(runlog, "before_cursor_execute", "UPDATE kf_intents")
    assert runlog.mark_sent(intent_id)
    assert cut
    [intent] = runlog.intents(run_id)
    assert intent.state == IntentState.SENT
