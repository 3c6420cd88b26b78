"""The `klingflow` command: videos, tasks, costs, the account, workflows, the service and the
local emulator.

Each command's module is imported only when that command runs (cli/_lazy.py), so `klingflow
runs show` does not load FastAPI, PyAV or DBOS first. One whose pip extra is missing
(`klingflow[workflows]` for `run`, `[server]` for `serve`, ...) becomes a stub that names the
extra to install and exits with `MISSING_EXTRA_EXIT_CODE`, so `pip install 'klingflow[cli]'`
still gives a working `klingflow video`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from klingflow.cli._errors import state
from klingflow.cli._lazy import LazyCommand, LazyGroup

__all__ = ["COMMANDS", "app", "main"]

COMMANDS = (
    LazyCommand(
        "video",
        "videos",
        "cli",
        "Make one Kling video: submit, wait with live status, download, print path and cost.",
    ),
    LazyCommand(
        "cost",
        "videos",
        "cli",
        "Estimate what a video (or any Kling task) costs, before spending anything; the prompt "
        "is optional, as the price does not depend on it.",
    ),
    LazyCommand(
        "prices",
        "prices",
        "cli",
        "Print the per-second price of every Kling version, mode and audio setting (the table "
        "every estimate uses), and the fixed-price task types.",
    ),
    LazyCommand(
        "account",
        "videos",
        "cli",
        "Show the account behind PIAPI_API_KEY: balance and unfinished tasks.",
    ),
    LazyCommand(
        "validate",
        "workflows",
        "workflows",
        "Check a workflow file without running it: schema, node references, templates, and the "
        "literal Kling parameters against PiAPI's rules. Prints one line per problem.",
    ),
    LazyCommand(
        "publish",
        "workflows",
        "workflows",
        "Validate workflow files and store them in the run database (KLINGFLOW_DATABASE_URL), "
        "where the service runs them and every worker and `klingflow serve` fires their "
        "schedules.",
    ),
    LazyCommand(
        "run",
        "execution",
        "workflows",
        "Run a workflow durably: live progress, then the run id, outputs and video paths.",
        probe=True,
    ),
    LazyCommand(
        "worker",
        "execution",
        "workflows",
        "Run queued and recovered runs, and fire the schedules of published workflows, until "
        "interrupted (Ctrl-C). Logs each run it starts, pauses and finishes on stderr.",
        probe=True,
    ),
    LazyCommand(
        "workers",
        "workers",
        "workflows",
        "The engines (workers, services, `run` processes) that share this database, with their "
        "last heartbeat.",
    ),
    LazyCommand(
        "recover",
        "workers",
        "workflows",
        "Hand the runs of an executor that will never return to the live workers.",
    ),
    LazyCommand(
        "serve",
        "serve",
        "server",
        "Serve the web UI, the JSON API, run triggers and PiAPI webhooks; runs execute (unless "
        "--no-execute) and schedules fire in this process, which logs each run it starts, "
        "pauses and finishes.",
    ),
    LazyCommand(
        "emulator",
        "emulator",
        "emulator",
        "Run a local PiAPI (Kling task API) emulator for offline work and integration tests.",
    ),
    LazyCommand(
        "demo",
        "demo",
        "all",
        "Price a video, then run the batch example (5 videos) durably and show its run log.",
    ),
    LazyCommand(
        "examples",
        "examples",
        "cli",
        "Copy the example workflows and their inputs into DIR (default ./examples); files "
        "already there are kept as they are.",
    ),
    LazyCommand(
        "task",
        "tasks",
        "cli",
        "Look after an existing task: get it, wait for it (and download), cancel it.",
        group=True,
    ),
    LazyCommand(
        "runs",
        "runs",
        "workflows",
        "Look at runs and steer paused ones: list, show, retry, skip, cancel.",
        group=True,
    ),
)
"""Every command, in the order `klingflow --help` lists them: (name, module in klingflow.cli,
the extra its imports need, the first paragraph of its help)."""


class _Root(LazyGroup):
    lazy = COMMANDS


app = typer.Typer(
    name="klingflow",
    help="Kling videos through PiAPI, reliably: generate, wait, download, and never pay twice.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=_Root,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version  # ~0.05 s: only for --version

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


def main() -> None:
    """Console-script entry point."""
    app()
