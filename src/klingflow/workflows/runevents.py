"""Each run's start, pause and finish as one record on the `klingflow.runs` logger.

Every run status change goes through `RunLog.set_status` in the process executing the run
(`klingflow worker`, `klingflow serve`, `klingflow run`); it calls `log_run_event`, which
costs nothing until someone listens: the record is only built when the logger is enabled
for INFO (`klingflow worker` and `serve` enable it, in text or JSON, `cli/_runlogs.py`).
Each record carries `run_event`, a dict of plain values, for any formatter.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from klingflow.formats import moment_text, usd_text

if TYPE_CHECKING:
    from klingflow.workflows.records import RunRecord

__all__ = ["RUN_LOGGER", "event_of", "log_run_event"]

RUN_LOGGER = logging.getLogger("klingflow.runs")

_EVENTS = {"running": "started", "paused": "paused"}
_FINISHED = {"completed", "cancelled", "crashed", "failed"}


def event_of(status: str) -> str | None:
    """`started`, `paused` or `finished` for a run status; None for `queued`."""
    return "finished" if status in _FINISHED else _EVENTS.get(status)


def log_run_event(record: RunRecord) -> None:
    """One INFO line: event, run id, workflow, status, spend (and where it paused)."""
    event = event_of(record.status.value)
    if event is None:
        return
    data: dict[str, Any] = {
        "time": moment_text(record.updated_at),
        "event": event,
        "run_id": record.run_id,
        "workflow": record.workflow_name,
        "status": record.status.value,
        "spent_usd": usd_text(record.spent_usd),
        "paused_node": record.paused_node,
        "message": record.message if event != "started" else None,
    }
    where = f" on {record.paused_node}" if record.paused_node else ""
    RUN_LOGGER.info(
        "%s %s %s%s · spent $%s",
        record.run_id,
        record.workflow_name,
        record.status.value,
        where,
        data["spent_usd"],
        extra={"run_event": data},
    )
