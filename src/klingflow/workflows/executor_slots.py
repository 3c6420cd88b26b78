"""Executor ids from lock files: each process sharing a home gets a unique, stable id.

DBOS recovers a workflow under the executor id that ran it, and two processes launched
with one id steal each other's live workflows (shared/dbos-notes.md, pitfall 3). So each
process takes the first free numbered slot in KLINGFLOW_HOME (`executor-N.lock`, held with
`flock` for the process's life) and uses its id: the same after a restart, never shared. A
slot whose lock is free but whose file exists belonged to a process that died; its runs
are handed back to the queues (`recover_abandoned_slots`).
"""

from __future__ import annotations

import fcntl
import socket
from collections.abc import Callable
from pathlib import Path
from typing import IO

from klingflow.workflows.database import is_sqlite

__all__ = ["MAX_SLOTS", "ExecutorSlot", "recover_abandoned_slots", "slot_prefix"]

MAX_SLOTS = 64
"""Processes that may share one home folder."""


def slot_prefix(database_url: str) -> str:
    """The executor ids' stem: on a shared (Postgres) database it names the host, so two
    machines with the same home path never take the same id."""
    return "local" if is_sqlite(database_url) else f"{socket.gethostname()}-local"


def _executor_id(prefix: str, number: int) -> str:
    return prefix if number == 0 else f"{prefix}-{number}"


def _lock_path(home: Path, number: int) -> Path:
    return home / f"executor-{number}.lock"


class ExecutorSlot:
    """This process's slot: its lock is held until `close` (or the process ends)."""

    def __init__(self, executor_id: str, handle: IO[str]) -> None:
        self.executor_id = executor_id
        self._handle = handle

    @classmethod
    def claim(cls, home: Path, prefix: str) -> ExecutorSlot:
        """The first free slot in `home`; `RuntimeError` when all `MAX_SLOTS` are taken."""
        for number in range(MAX_SLOTS):
            handle = _lock_path(home, number).open("a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            return cls(_executor_id(prefix, number), handle)
        raise RuntimeError(f"{MAX_SLOTS} klingflow processes already share this home folder")

    def close(self) -> None:
        """Give the slot back (closing the file releases its lock)."""
        self._handle.close()


def recover_abandoned_slots(
    home: Path, prefix: str, *, own_id: str, recover: Callable[[str], object]
) -> None:
    """Call `recover` for each slot whose process died (its lock file exists, unlocked),
    holding that lock meanwhile, so a process starting at the same moment cannot take the
    slot while its previous life's runs are handed back."""
    for number in range(MAX_SLOTS):
        executor_id = _executor_id(prefix, number)
        path = _lock_path(home, number)
        if executor_id == own_id or not path.exists():
            continue
        with path.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # alive
            recover(executor_id)
            fcntl.flock(handle, fcntl.LOCK_UN)
