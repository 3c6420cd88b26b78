"""Short transactions on the run log's tables that survive a database connection cut in use.

Pool pre-ping and the outage retry (workflows/database.py) cover a connection being *taken*;
a connection cut while a statement runs on it (a Postgres restart, a terminated backend, a
network blip) raises in the middle of the work, and the run whose node wrote would end
`crashed`. So every run-log read and write, and a worker's lease taking on a node's path,
goes through `transaction`: it runs the whole transaction again on a fresh connection (whose
connect rides out the outage window, `KLINGFLOW_DATABASE_OUTAGE_SECONDS`) when SQLAlchemy
says the connection was invalidated.

Repeating is safe when the cut came before COMMIT was sent: nothing was written. A cut during
COMMIT leaves unknown whether it landed, so a write says how it may be repeated: `idempotent`
(doing it twice is doing it once), or a `committed` check that looks for the first attempt's
mark (its row, its state) before doing it again; a write with neither raises, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa

from klingflow.redaction import MIN_SECRET_LENGTH, redact, run_secrets
from klingflow.workflows import budget_tally
from klingflow.workflows.group_commit import GroupCommit, Write
from klingflow.workflows.schema import create_tables

__all__ = ["DISCONNECT_RETRIES", "Transactions", "transaction"]

log = logging.getLogger("klingflow.database")

T = TypeVar("T")

DISCONNECT_RETRIES = 3
"""How many times a transaction cut off from its database is run again (each reconnect
waits up to the outage window for the database to come back)."""


def transaction(
    engine: sa.Engine,
    body: Callable[[sa.Connection], T],
    *,
    idempotent: bool = False,
    committed: Callable[[sa.Connection], bool] | None = None,
) -> T:
    """Run `body` in one transaction and commit; run it again on a fresh connection when
    the connection is cut. If the cut hit the COMMIT itself, it is run again only when
    `idempotent`, or when `committed` (asked on a fresh connection) finds that the first
    COMMIT did not land; when it did, `body`'s first answer is returned."""
    for retry in range(DISCONNECT_RETRIES + 1):
        answered = False
        result: T
        try:
            with budget_tally.begin(engine) as connection:
                result = body(connection)
                answered = True  # leaving the block sends the budget sums, then COMMIT
            return result
        except sa.exc.DBAPIError as error:
            if not error.connection_invalidated or retry == DISCONNECT_RETRIES:
                raise
            if answered and not idempotent:
                if committed is None:
                    raise
                with engine.connect() as connection:
                    if committed(connection):
                        return result
            # Not a warning: it is handled, and an outage behind it gets its own one-line
            # notice (database.py); this one spans lines (SQL, parameters) on a CLI's stderr.
            log.info("database connection cut (%s); running the transaction again", error)
    raise AssertionError("unreachable")


class Transactions:
    """The run log's database: its engine, its secrets to mask, and retried transactions."""

    def __init__(self, engine: sa.Engine, *, secrets: tuple[str, ...] = ()) -> None:
        self.engine = engine
        self._secrets = tuple(s for s in secrets if len(s) >= MIN_SECRET_LENGTH)
        self.group = GroupCommit(
            engine, off_loop=engine.dialect.name != "sqlite", alone=transaction
        )
        """The hot path's writes, committed together (workflows/group_commit.py)."""
        create_tables(engine)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The deployment's known secrets, and the executing run's secret inputs."""
        return self._secrets + run_secrets()

    def _clean(self, value: Any) -> Any:
        """What may be stored: secret-looking keys and known secret values masked."""
        return redact(value, self.secrets)

    def read(self, body: Callable[[sa.Connection], T]) -> T:
        """`body`'s answer on a connection of the log, asked again if the connection is cut."""
        return transaction(self.engine, body, idempotent=True)

    def write(
        self,
        body: Callable[[sa.Connection], T],
        *,
        idempotent: bool = False,
        committed: Callable[[sa.Connection], bool] | None = None,
    ) -> T:
        """`body` in one transaction, run again after a cut as `transaction` says."""
        return transaction(self.engine, body, idempotent=idempotent, committed=committed)

    def write_now(self, write: Write[T]) -> T:
        """`write` in a transaction of its own (what the hot path's sync forms use)."""
        return self.write(write.body, idempotent=write.idempotent, committed=write.committed)

    async def write_soon(self, write: Write[T]) -> T:
        """`write` committed with the others queued now (group commit); awaited, so it has
        landed when this returns, as with `write`."""
        return await self.group.run(write)
