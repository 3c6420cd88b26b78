"""The `klingflow` command: videos, tasks, costs, the account, and the local emulator."""

from __future__ import annotations

from importlib.metadata import version
from typing import Annotated

import typer

from klingflow.cli._errors import state
from klingflow.cli.demo import demo
from klingflow.cli.emulator import emulator
from klingflow.cli.runs import run, runs_app, worker
from klingflow.cli.serve import serve
from klingflow.cli.tasks import task_app
from klingflow.cli.videos import account, cost, video
from klingflow.cli.workers import recover, workers
from klingflow.cli.workflows import publish, validate

__all__ = ["app", "main"]

app = typer.Typer(
    name="klingflow",
    help="Kling videos through PiAPI, reliably: generate, wait, download, and never pay twice.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"klingflow {version('klingflow')}")
        raise typer.Exit


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    state.debug = debug


app.command()(video)
app.add_typer(task_app, name="task")
app.command()(cost)
app.command()(account)
app.command()(validate)
app.command()(publish)
app.command()(run)
app.add_typer(runs_app, name="runs")
app.command()(worker)
app.command()(workers)
app.command()(recover)
app.command()(serve)
app.command()(emulator)
app.command()(demo)


def main() -> None:
    """Console-script entry point."""
    app()
