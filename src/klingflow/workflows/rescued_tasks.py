"""Task ids PiAPI answered that the run database refused to record, kept beside it.

A create's answer is recorded right after the POST (`accept_intent`). When that write fails
(the disk filled up during the POST), the id would live only in memory: the process stops,
and the resumed node finds its intent `sent` with no task id, so it can only pause as
uncertain, although the task exists and is paid for. A full disk refuses a new file too, so
the file's space is taken when an executing engine opens a SQLite run log. Writing an id
then overwrites bytes that are already allocated, and needs no free space. A node that finds
its intent sent without a task id looks here before it pauses.

One JSON line per id, up to the first NUL byte. Writers hold an exclusive `flock`. Postgres
keeps none of this: its disk is the server's, and the file would not be the other workers'.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path

__all__ = ["RESCUE_BYTES", "RescuedTasks"]

log = logging.getLogger(__name__)

RESCUE_BYTES = 64 * 1024
"""Room for about 400 ids: one per submission in flight when the disk filled."""


class RescuedTasks:
    """The file of one SQLite run log (`<database>-rescued-tasks`)."""

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + "-rescued-tasks")

    def reserve(self) -> None:
        """Take the file's space now, while there is some (best effort: without it, a
        refused write pauses the node as uncertain, as it always did)."""
        if self.path.exists():  # it may hold ids a resumed run still needs
            return
        try:
            with self.path.open("xb") as file:
                file.write(bytes(RESCUE_BYTES))
                file.flush()
                os.fsync(file.fileno())
        except FileExistsError:
            return  # another process of this run log took it first
        except OSError as error:
            log.warning("no room kept for task ids the run database refuses (%s)", error)
            self.path.unlink(missing_ok=True)

    def keep(self, intent_id: str, task_id: str) -> bool:
        """Keep the task id of `intent_id`; False when there is no file or no room left."""
        line = json.dumps({"intent_id": intent_id, "task_id": task_id}).encode() + b"\n"
        try:
            with self.path.open("r+b") as file:
                fcntl.flock(file, fcntl.LOCK_EX)
                used = file.read().find(b"\0")
                if used < 0 or used + len(line) > RESCUE_BYTES:
                    return False
                os.pwrite(file.fileno(), line, used)
                os.fsync(file.fileno())
                return True
        except OSError as error:
            log.warning("could not keep task %s beside the run database (%s)", task_id, error)
            return False

    def find(self, intent_id: str) -> str | None:
        """The task id kept for `intent_id`, if any."""
        try:
            kept = self.path.read_bytes().split(b"\0", 1)[0]
        except FileNotFoundError:
            return None
        for line in kept.splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line cut by a crash mid-write
                continue
            if not isinstance(record, dict) or record.get("intent_id") != intent_id:
                continue
            if isinstance(task_id := record.get("task_id"), str) and task_id:
                return task_id
        return None
