"""The paid-exactly-once journal on its own (workflows/intents.py), on a SQLite run log."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from klingflow.errors import WorkflowError
from klingflow.piapi.models import usd_to_points
from klingflow.workflows.database import make_engine
from klingflow.workflows.intents import TaskIdConflictError
from klingflow.workflows.records import IntentState
from klingflow.workflows.runlog import RunLog


@pytest.fixture
def runlog(tmp_path: Path) -> Iterator[RunLog]:
    engine = make_engine(f"sqlite:///{tmp_path / 'runlog.db'}")
    yield RunLog(engine)
    engine.dispose()


def _run(runlog: RunLog, budget_usd: Decimal | None = None) -> str:
    run, _ = runlog.create_run(
        workflow_name="journal", workflow_hash="0" * 64, workflow={}, source_path=None,
        trigger={}, inputs={}, output_root="/tmp/out", budget_usd=budget_usd,
    )  # fmt: skip
    return run.run_id


def _reserve(runlog: RunLog, run_id: str, path: str = "video") -> str | None:
    return runlog.reserve_and_record(
        run_id, 0, path, request={"prompt": "a cat"}, estimated_usd=Decimal("0.50")
    )


def test_a_submission_over_budget_is_not_recorded(runlog: RunLog) -> None:
    """The reservation and the intent are one write: over budget, neither happens."""
    run_id = _run(runlog, budget_usd=Decimal("0.75"))
    assert _reserve(runlog, run_id, "first") is not None
    assert _reserve(runlog, run_id, "second") is None
    assert [i.node_path for i in runlog.intents(run_id)] == ["first"]
    run = runlog.get_run(run_id)
    assert run is not None
    assert run.reserved_usd == Decimal("0.50")


def test_an_accepted_submission_is_settled_once(runlog: RunLog) -> None:
    """prepared -> sent -> accepted -> completed; the reservation becomes what PiAPI charged,
    and finishing again changes nothing."""
    run_id = _run(runlog)
    intent_id = _reserve(runlog, run_id)
    assert intent_id is not None
    live = runlog.current_intent(run_id, 0, "video")
    assert live is not None
    assert live.state is IntentState.PREPARED
    runlog.mark_sent(intent_id)
    runlog.accept_intent(intent_id, run_id=run_id, epoch=0, node_path="video", task_id="t-1")
    spent = usd_to_points(Decimal("0.40"))
    assert runlog.finish_intent("t-1", IntentState.COMPLETED, spent_points=spent)
    assert not runlog.finish_intent("t-1", IntentState.COMPLETED, spent_points=spent)
    run = runlog.get_run(run_id)
    assert run is not None
    assert (run.reserved_usd, run.spent_usd) == (Decimal(0), Decimal("0.40"))
    assert runlog.current_intent(run_id, 0, "video") is not None  # completed still counts


def test_an_abandoned_submission_keeps_its_reservation_until_its_task_is_named(
    runlog: RunLog,
) -> None:
    """uncertain -> abandoned keeps the estimate reserved; the webhook naming the task
    settles it once."""
    run_id = _run(runlog)
    intent_id = _reserve(runlog, run_id)
    assert intent_id is not None
    runlog.mark_sent(intent_id)
    assert runlog.mark_uncertain(intent_id, note="no answer") is None
    runlog.abandon_intent(intent_id, note="resubmitted")
    assert runlog.current_intent(run_id, 0, "video") is None
    spent = usd_to_points(Decimal("0.50"))
    assert runlog.settle_abandoned(intent_id, task_id="t-9", spent_points=spent)
    assert not runlog.settle_abandoned(intent_id, task_id="t-9", spent_points=spent)
    run = runlog.get_run(run_id)
    assert run is not None
    assert (run.reserved_usd, run.spent_usd) == (Decimal(0), Decimal("0.50"))


def test_a_task_id_held_by_another_submission_is_never_merged(runlog: RunLog) -> None:
    """A second submission answered with a bound task id becomes uncertain and raises."""
    first, second = _run(runlog), _run(runlog)
    one, two = _reserve(runlog, first), _reserve(runlog, second)
    assert one is not None
    assert two is not None
    runlog.accept_intent(one, run_id=first, epoch=0, node_path="video", task_id="t-1")
    with pytest.raises(TaskIdConflictError, match=first):
        runlog.accept_intent(two, run_id=second, epoch=0, node_path="video", task_id="t-1")
    [intent] = runlog.intents(second)
    assert intent.state is IntentState.UNCERTAIN


def test_a_node_gets_one_live_submission(runlog: RunLog) -> None:
    """Recording a second submission for a node whose first is live is refused by the run
    log itself (`uq_kf_intents_live`), whoever asks; once the first is over, a new one is
    recorded."""
    run_id = _run(runlog)
    first = _reserve(runlog, run_id)
    assert first is not None
    with pytest.raises(WorkflowError, match=f"already has a live submission \\(intent {first}\\)"):
        _reserve(runlog, run_id)
    assert [i.intent_id for i in runlog.intents(run_id)] == [first]
    run = runlog.get_run(run_id)
    assert run is not None
    assert run.reserved_usd == Decimal("0.50")  # the refused one reserved nothing
    runlog.update_intent(first, IntentState.REJECTED)  # PiAPI refused it: nothing was made
    second = _reserve(runlog, run_id)
    assert second is not None
    assert second != first
