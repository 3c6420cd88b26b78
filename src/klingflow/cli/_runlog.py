"""The run log as the `runs` commands reach it: opened from the settings, and run ids as
people type them: the whole id, or any unique beginning of it (`run-3f2a`, or `3f2a`
without the `run-`), as git takes commit hashes."""

from __future__ import annotations

import sqlalchemy as sa
import typer

from klingflow.errors import RunNotFoundError
from klingflow.settings import Settings
from klingflow.workflows.database import make_engine
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.schema import runs

__all__ = ["open_runlog", "resolve_run_id"]

PREFIX = "run-"


def open_runlog() -> RunLog:
    """The run log of `KLINGFLOW_DATABASE_URL` (or the home's SQLite file), riding out a
    database outage as long as the engine would."""
    settings = Settings()
    url = settings.resolved_database_url()
    return RunLog(make_engine(url, outage_seconds=settings.database_outage_seconds))


def resolve_run_id(runlog: RunLog, text: str) -> str:
    """The one run id `text` names; `RunNotFoundError` for none, a usage error (2) listing
    the candidates when several runs begin with it."""
    exact = sa.select(runs.c.run_id).where(runs.c.run_id == text)
    if runlog.read(lambda c: c.execute(exact).first()) is not None:  # not the whole row
        return text
    candidates = runlog.run_ids_starting_with(text) if text else []
    if not candidates and text and not text.startswith(PREFIX):
        candidates = runlog.run_ids_starting_with(PREFIX + text)
    if not candidates:
        raise RunNotFoundError(text)
    if len(candidates) > 1:
        shown = ", ".join(candidates[:4]) + (", ..." if len(candidates) > 4 else "")
        raise typer.BadParameter(
            f"{text!r} begins several runs ({shown}): give more of the id", param_hint="RUN_ID"
        )
    return candidates[0]
