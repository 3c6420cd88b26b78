"""Signed-out sessions and failed sign-ins, kept in the run log's database.

A session cookie is signed, not stored, so signing out must be remembered somewhere every
`serve` process on the database reads, and a restart must not forget it; the same goes for
the failures that rate-limit token guesses. Both tables hold only what can still matter:
a revocation until the cookie would have expired anyway, a failure while it is within the
window it counts in. Neither holds a token: a session id is random, a client is an address.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa

from klingflow.workflows.schema import failed_sign_ins, revoked_sessions
from klingflow.workflows.transactions import Transactions

__all__ = ["SessionLog"]


class SessionLog(Transactions):
    """Revoked session ids and recent failed sign-ins (wall-clock times, shared by processes)."""

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(engine)
        self.clock = clock

    def revoke(self, sid: str, expires_at: float) -> None:
        """Remember that session `sid` ended (until `expires_at`); forget the expired ones."""
        now = self.clock()

        def write(tx: sa.Connection) -> None:
            tx.execute(revoked_sessions.delete().where(revoked_sessions.c.expires_at < now))
            known = sa.select(revoked_sessions.c.sid).where(revoked_sessions.c.sid == sid)
            if tx.execute(known).first() is None:
                tx.execute(revoked_sessions.insert().values(sid=sid, expires_at=expires_at))

        self.write(write, idempotent=True)

    def is_revoked(self, sid: str) -> bool:
        """Whether session `sid` was signed out."""
        query = sa.select(revoked_sessions.c.sid).where(revoked_sessions.c.sid == sid)
        return self.read(lambda c: c.execute(query).first() is not None)

    def failures(self, client: str, since: float) -> list[float]:
        """When `client` failed to sign in after `since`, oldest first."""
        query = (
            sa.select(failed_sign_ins.c.failed_at)
            .where(failed_sign_ins.c.client == client, failed_sign_ins.c.failed_at > since)
            .order_by(failed_sign_ins.c.failed_at)
        )
        return self.read(lambda c: list(c.execute(query).scalars()))

    def add_failure(self, client: str, forget_before: float) -> None:
        """Count a failure of `client` now; failures older than `forget_before` go."""
        now = self.clock()

        def write(tx: sa.Connection) -> None:
            tx.execute(failed_sign_ins.delete().where(failed_sign_ins.c.failed_at <= forget_before))
            tx.execute(failed_sign_ins.insert().values(client=client, failed_at=now))

        self.write(write)

    def clear_failures(self, client: str) -> None:
        """Forget `client`'s failures (it proved it has the token)."""
        delete = failed_sign_ins.delete().where(failed_sign_ins.c.client == client)
        self.write(lambda tx: tx.execute(delete), idempotent=True)
