"""A transaction's changes to its runs' budget counters, sent as one UPDATE per run just
before it commits.

`kf_run_budgets` holds one row per run, and an UPDATE of it keeps that row locked until
COMMIT. On Postgres the hot path's writes commit in groups (group_commit.py): a group that
settled one video at its start kept every other worker's group touching the same run
waiting until its own COMMIT, so three workers on one batch ran slower than one (measured:
0.66-0.86 of one worker's rate; bench/notes.md). Counters only add up, so a transaction's
additions can wait: each write adds its share here (`add`), and `begin` sends the sums last,
run after run in a fixed order, so two transactions never wait on each other in a circle.

Reading a run's counters in a transaction must first send what that transaction added to
them (`send(tx, run_id)`): a budgeted run's claim does, to check its budget
(`claims._RESERVE`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from klingflow.workflows.prepared import execute
from klingflow.workflows.schema import run_budgets

__all__ = ["add", "begin", "send"]

_KEY = "klingflow.budget_tally"
"""Where an open transaction's sums wait, in its connection's `info`."""

_counters = run_budgets.c
_UPDATE = (
    run_budgets.update()
    .where(_counters.run_id == sa.bindparam("q_run"))
    .values(
        reserved_points=_counters.reserved_points + sa.bindparam("q_reserved"),
        spent_points=_counters.spent_points + sa.bindparam("q_spent"),
        estimated_points=_counters.estimated_points + sa.bindparam("q_estimated"),
    )
)

Sums = dict[str, list[int]]
"""Per run: [reserved, spent, estimated] points to add."""


@contextmanager
def begin(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction on a connection of `engine` whose budget additions are sent as it ends
    well (then it commits); none are sent when the block raises (it rolls back)."""
    with engine.connect() as connection, connection.begin():
        info = connection.info  # held: a connection cut in use cannot be asked again
        info[_KEY] = {}
        try:
            yield connection
            send(connection)
        finally:
            info.pop(_KEY, None)


def add(
    tx: sa.Connection, run_id: str, *, reserved: int = 0, spent: int = 0, estimated: int = 0
) -> None:
    """Add to a run's counters as `tx` commits (at once outside `begin`: nothing would send
    them later)."""
    sums: Sums | None = tx.info.get(_KEY)
    if sums is None:
        _update(tx, run_id, [reserved, spent, estimated])
        return
    current = sums.setdefault(run_id, [0, 0, 0])
    current[0] += reserved
    current[1] += spent
    current[2] += estimated


def send(tx: sa.Connection, run_id: str | None = None) -> None:
    """Send what `tx` added to `run_id`'s counters so far (to every run's, by run id)."""
    sums: Sums | None = tx.info.get(_KEY)
    if not sums:
        return
    for run in [run_id] if run_id is not None else sorted(sums):
        if (added := sums.pop(run, None)) is not None and any(added):
            _update(tx, run, added)


def _update(tx: sa.Connection, run_id: str, added: list[int]) -> None:
    reserved, spent, estimated = added
    values = {"q_run": run_id, "q_reserved": reserved, "q_spent": spent, "q_estimated": estimated}
    execute(tx, _UPDATE, values)
