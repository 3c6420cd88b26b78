"""`--log-format text|json` of `klingflow worker` and `serve`: one line per run event on
stderr (`klingflow.workflows.runevents`), for people or for log shippers."""

from __future__ import annotations

import json
import logging
import sys

from klingflow.cli._options import LogFormat
from klingflow.workflows.runevents import RUN_LOGGER

__all__ = ["log_runs"]


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is when the record comes (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = getattr(record, "run_event", {})
        line = f"{data.get('time')} run {data.get('event')}: {record.getMessage()}"
        return f"{line} · {data['message']}" if data.get("message") else line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(getattr(record, "run_event", {"message": record.getMessage()}))


def log_runs(log_format: LogFormat) -> None:
    """Send run events to stderr in `log_format` (replacing an earlier call's handler)."""
    for handler in list(RUN_LOGGER.handlers):
        if isinstance(handler, _CurrentStderr):
            RUN_LOGGER.removeHandler(handler)
    handler = _CurrentStderr()
    handler.setFormatter(_JsonFormatter() if log_format == "json" else _TextFormatter())
    RUN_LOGGER.addHandler(handler)
    RUN_LOGGER.setLevel(logging.INFO)
    RUN_LOGGER.propagate = False
