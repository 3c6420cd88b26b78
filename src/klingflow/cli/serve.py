"""`klingflow serve`: the HTTP service and the engine in one process (docs/service.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from klingflow.cli._console import err
from klingflow.cli._errors import handles_errors
from klingflow.cli._ports import require_free_port
from klingflow.cli._runlogs import LogFormatOption, log_runs
from klingflow.cli.runs import require_key
from klingflow.cli.workflows import publish_files
from klingflow.service import create_app
from klingflow.service.security import check_bind
from klingflow.settings import Settings

__all__ = ["serve"]


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
    log_format: LogFormatOption = "text",
) -> None:
    """Serve the web UI, the JSON API, run triggers and PiAPI webhooks; runs execute and
    schedules fire in this process, which logs each run it starts, pauses and finishes."""
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
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
