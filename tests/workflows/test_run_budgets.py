"""A run's money lives in `kf_run_budgets`, apart from the run's row; a run log an older
klingflow wrote, with the money in `kf_runs`, is moved there when it is opened, reservations
of runs in flight included."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import sqlalchemy as sa

from klingflow.workflows.records import Intent, IntentState
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.schema import BUDGET_COLUMNS

OLD_COLUMNS = {
    "budget_points": "BIGINT",
    "reserved_points": "BIGINT NOT NULL DEFAULT 0",
    "spent_points": "BIGINT NOT NULL DEFAULT 0",
    "estimated_points": "BIGINT NOT NULL DEFAULT 0",
}
"""The money columns as the older `kf_runs` had them."""


def _run(runlog: RunLog, budget_usd: str | None) -> str:
    run, _ = runlog.create_run(
        workflow_name="money", workflow_hash="0" * 64, workflow={}, source_path=None,
        trigger={}, inputs={}, output_root="/tmp/out",
        budget_usd=None if budget_usd is None else Decimal(budget_usd),
    )  # fmt: skip
    return run.run_id


def _make_it_old(engine: sa.Engine) -> None:
    """Give the run log the older layout: the money back in `kf_runs`, no `kf_run_budgets`."""
    with engine.begin() as tx:
        for name, kind in OLD_COLUMNS.items():
            tx.execute(sa.text(f"ALTER TABLE kf_runs ADD COLUMN {name} {kind}"))
        old = sa.table("kf_runs", sa.column("run_id"), *map(sa.column, BUDGET_COLUMNS))
        for row in tx.execute(sa.text("SELECT * FROM kf_run_budgets")).mappings().all():
            moved = {name: row[name] for name in BUDGET_COLUMNS}
            tx.execute(old.update().where(old.c.run_id == row["run_id"]).values(moved))
        tx.execute(sa.text("DROP TABLE kf_run_budgets"))


def _columns(engine: sa.Engine) -> set[str]:
    return {column["name"] for column in sa.inspect(engine).get_columns("kf_runs")}


def test_an_older_run_log_keeps_its_runs_money_when_opened(engine: sa.Engine) -> None:
    """A run mid-batch (one video reserved, one settled) and an unbounded one, written by an
    older klingflow: opened by this one, each keeps its budget, reservation and spend, the
    reservation can still be settled and the budget still refuses an estimate over it."""
    runlog = RunLog(engine)
    capped, free = _run(runlog, "2.00"), _run(runlog, None)
    assert runlog.reserve_and_record(capped, 0, "a", request={}, estimated_usd=Decimal("0.50"))
    assert runlog.reserve_and_record(capped, 0, "b", request={}, estimated_usd=Decimal("0.70"))
    runlog.settle(capped, reserved_usd=Decimal("0.70"), spent_usd=Decimal("0.60"))
    _make_it_old(engine)
    assert set(BUDGET_COLUMNS) <= _columns(engine)

    reopened = RunLog(engine)
    assert not set(BUDGET_COLUMNS) & _columns(engine)
    run = reopened.get_run(capped)
    assert run is not None
    assert (run.budget_usd, run.reserved_usd, run.spent_usd, run.estimated_usd) == (
        Decimal("2.00"), Decimal("0.50"), Decimal("0.60"), Decimal("1.20"),
    )  # fmt: skip
    other = reopened.get_run(free)
    assert other is not None
    assert (other.budget_usd, other.reserved_usd) == (None, Decimal("0"))
    # 2.00 - 0.60 spent - 0.50 reserved leaves 0.90: 1.00 is refused, 0.90 taken.
    assert (
        reopened.reserve_and_record(capped, 0, "c", request={}, estimated_usd=Decimal("1.00"))
        is None
    )
    assert reopened.reserve_and_record(capped, 0, "c", request={}, estimated_usd=Decimal("0.90"))
    reopened.settle(capped, reserved_usd=Decimal("0.50"), spent_usd=Decimal("0.50"))
    assert reopened.spend(since=0).total_usd == Decimal("1.10")
    assert reopened.spend(since=0).reserved_usd == Decimal("0.90")
    # A run started now is stored in the new layout, and a third opening moves nothing again.
    assert RunLog(engine).get_run(_run(reopened, "1.00")) is not None
    assert [r.run_id for r in RunLog(engine).list_runs()][1:] == [free, capped]


def test_a_claim_counts_what_its_own_transaction_settled_first(engine: sa.Engine) -> None:
    """A video settled and another claimed in one group commit (Postgres) reach the budget in
    that order: the settled reservation is given back before the claim is checked against
    the budget (the transaction adds to the counters only as it ends, budget_tally.py)."""
    runlog = RunLog(engine)
    capped = _run(runlog, "1.10")
    first = runlog.reserve_and_record(capped, 0, "a", request={}, estimated_usd=Decimal("0.50"))
    assert first is not None
    assert runlog.reserve_and_record(capped, 0, "b", request={}, estimated_usd=Decimal("0.50"))
    runlog.mark_sent(first)
    runlog.accept_intent(first, run_id=capped, epoch=0, node_path="a", task_id="task-a")

    async def settle_then_claim() -> tuple[bool, Intent | str | None]:
        # queued together: one transaction on Postgres, one after the other on SQLite
        return await asyncio.gather(
            runlog.finish_intent_soon("task-a", IntentState.COMPLETED, spent_points=500_000),
            runlog.live_or_reserve_soon(capped, 0, "c", request={}, estimated_usd=Decimal("0.50")),
        )

    transactions = runlog.group.transactions
    settled, claimed = asyncio.run(settle_then_claim())
    if engine.dialect.name == "postgresql":
        assert runlog.group.transactions == transactions + 1  # they did share one
    assert settled is True
    # 0.05 spent + 0.50 (b) + 0.50 (c) fits 1.10; with a's 0.50 still reserved it would not
    assert isinstance(claimed, str)
    run = runlog.get_run(capped)
    assert run is not None
    assert (run.reserved_usd, run.spent_usd, run.estimated_usd) == (
        Decimal("1.00"), Decimal("0.05"), Decimal("1.50"),
    )  # fmt: skip
