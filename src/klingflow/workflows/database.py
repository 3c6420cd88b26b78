"""One SQLAlchemy engine for DBOS's system tables and our run log, SQLite or Postgres.

On SQLite we open the file in WAL mode (about 50% more throughput than DBOS's default
journal, measured in shared/dbos-notes.md) with the connection settings DBOS itself uses:
IMMEDIATE transactions, a 30 s busy timeout and foreign keys.

On Postgres a lost connection is transient: a new connection that fails is tried again,
with backoff, for up to `outage_seconds` (`KLINGFLOW_DATABASE_OUTAGE_SECONDS`), and pooled
connections are checked before use. A blip of a few seconds is ridden out; a longer outage
raises, and the run it hit ends `crashed`, which `klingflow runs retry` resumes.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

__all__ = ["DEFAULT_OUTAGE_SECONDS", "is_sqlite", "make_engine"]

log = logging.getLogger("klingflow.database")


def is_sqlite(url: str) -> bool:
    """Whether `url` names a SQLite file: one machine, no advisory locks or leases needed."""
    return url.startswith("sqlite")


DEFAULT_OUTAGE_SECONDS = 60.0


def make_engine(url: str, *, outage_seconds: float = DEFAULT_OUTAGE_SECONDS) -> sa.Engine:
    """An engine for `url`; creates the SQLite file's folder when needed."""
    if not is_sqlite(url):
        engine = sa.create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
        _ride_out_outages(engine, outage_seconds)
        return engine
    path = url.removeprefix("sqlite:///")
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # Last in, first out: the event loop's next transaction takes the connection its last
    # one gave back. SQLite drops a connection's page cache when another connection has
    # written since its last transaction; taken in turn (first in, first out), every
    # connection found its cache stale (bench/notes.md, session 14: the run log's
    # statements 0.68 -> 0.56 ms of CPU a video).
    engine = sa.create_engine(url, pool_size=20, max_overflow=20, pool_use_lifo=True)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = "IMMEDIATE"
        dbapi_connection.execute("PRAGMA busy_timeout=30000")
        dbapi_connection.execute("PRAGMA foreign_keys=ON")
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    return engine


def _ride_out_outages(engine: sa.Engine, outage_seconds: float) -> None:
    """Connect through an outage of up to `outage_seconds`: refused connections, a database
    not accepting them, a server restarting. Blocks the caller meanwhile, as DBOS itself
    does with its own connections (a run cannot go on without its database anyway)."""
    outage = _Outage()

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        deadline = time.monotonic() + outage_seconds
        delay = 0.1
        while True:
            try:
                connection = dialect.loaded_dbapi.connect(*cargs, **cparams)
            except dialect.loaded_dbapi.OperationalError as error:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                outage.failed(error, left)
                time.sleep(min(delay, left))
                delay = min(delay * 2, 5.0)
            else:
                outage.ended()
                return connection


class _Outage:
    """One notice per outage, not one per attempt: every thread of a process (runs, DBOS's
    queue and heartbeat) retries its own connect, which printed dozens of lines on
    `klingflow run`'s stderr for a 4 s blip."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: float | None = None

    def failed(self, error: Exception, left: float) -> None:
        with self._lock:
            first = self._since is None
            if first:
                self._since = time.monotonic()
        if first:
            log.warning("database unreachable (%s); trying again for up to %.0f s", error, left)
        else:
            log.debug("database still unreachable (%s)", error)

    def ended(self) -> None:
        with self._lock:
            since, self._since = self._since, None
        if since is not None:
            log.info("database reachable again after %.1f s", time.monotonic() - since)
