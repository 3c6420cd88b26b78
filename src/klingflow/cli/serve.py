"""`klingflow serve`: the HTTP service and the engine in one process (docs/service.md), or
with `--no-execute` the API and UI only, in front of workers (docs/scaling.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from klingflow.cli._console import err, require_key
from klingflow.cli._errors import handles_errors
from klingflow.cli._options import LogFormatOption
from klingflow.cli._ports import require_free_port
from klingflow.cli._runlogs import log_runs
from klingflow.cli.workflows import publish_files
from klingflow.service import create_app
from klingflow.service.app import EngineFactory
from klingflow.service.security import check_bind
from klingflow.settings import KEEP_ALIVE_SECONDS, STOP_GRACE_SECONDS, Settings
from klingflow.workflows.engine import Engine

__all__ = ["serve"]


def _engine_factory(*, execute: bool) -> EngineFactory:
    """The service's engine, which says where it keeps its runs once it has launched."""

    @asynccontextmanager
    async def factory(settings: Settings) -> AsyncIterator[Engine]:
        engine = Engine(settings, executor_id=settings.executor_id, execute=execute, role="serve")
        async with engine:
            where = engine.runlog.engine.url  # its password masked
            runs = "runs execute here" if execute else "API and UI only: workers run the runs"
            err.print(f"klingflow serve: executor {engine.executor_id} on {where} ({runs})")
            yield engine

    return factory


@handles_errors
def serve(
    host: Annotated[
        str, typer.Option(help="Address to listen on; beyond loopback needs KLINGFLOW_API_TOKEN.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.", min=0, max=65535)] = 8000,
    workflows: Annotated[
        list[Path] | None,
        typer.Option(
            "--workflows",
            help="Publish these workflow files, or the .yaml/.yml/.json files of these "
            "folders, before serving (repeatable).",
        ),
    ] = None,
    execute: Annotated[
        bool,
        typer.Option(
            "--execute/--no-execute",
            help="Run the runs in this process too (default), or leave them to `klingflow "
            "worker` processes sharing KLINGFLOW_DATABASE_URL.",
        ),
    ] = True,
    log_format: LogFormatOption = "text",
) -> None:
    """Serve the web UI, the JSON API, run triggers and PiAPI webhooks; runs execute (unless
    --no-execute) and schedules fire in this process, which logs each run it starts, pauses
    and finishes."""
    settings = Settings()
    try:
        check_bind(host, settings)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--host") from None
    require_key()
    require_free_port(host, port)  # before publishing or printing anything
    if workflows:
        publish_files(workflows, settings)
    log_runs(log_format)
    err.print(f"klingflow serving on http://{host}:{port} (web UI at /, API docs at /docs)")
    app = create_app(settings, engine_factory=_engine_factory(execute=execute))
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=STOP_GRACE_SECONDS,
    )
