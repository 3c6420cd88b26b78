"""The `klingflow` command: videos, tasks, costs, the account, workflows, the service and the
local emulator.

Each command module is imported here; one whose pip extra is missing (`klingflow[workflows]`
for `run`, `[server]` for `serve`, ...) becomes a stub that names the extra to install and
exits with `MISSING_EXTRA_EXIT_CODE`, so `pip install 'klingflow[cli]'` still gives a working
`klingflow video`.
"""

from __future__ import annotations

import importlib
from importlib.metadata import version
from typing import Annotated

import typer

from klingflow.cli._errors import err_console, state
from klingflow.cli._help import ReadableHelpGroup
from klingflow.cli.exit_codes import MISSING_EXTRA_EXIT_CODE
from klingflow.extras import install_hint

__all__ = ["app", "main"]

app = typer.Typer(
    name="klingflow",
    help="Kling videos through PiAPI, reliably: generate, wait, download, and never pay twice.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=ReadableHelpGroup,
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


# (module in klingflow.cli, command or group names in it, the extra its imports need), in
# the order `klingflow --help` lists them. A group's name is the attribute `<name>_app`.
_COMMANDS: list[tuple[str, list[str], str]] = [
    ("videos", ["video"], "cli"),
    ("tasks", ["task"], "cli"),
    ("videos", ["cost"], "cli"),
    ("prices", ["prices"], "cli"),
    ("videos", ["account"], "cli"),
    ("workflows", ["validate", "publish"], "workflows"),
    ("execution", ["run"], "workflows"),
    ("runs", ["runs"], "workflows"),
    ("execution", ["worker"], "workflows"),
    ("workers", ["workers", "recover"], "workflows"),
    ("serve", ["serve"], "server"),
    ("emulator", ["emulator"], "emulator"),
    ("demo", ["demo"], "all"),
    ("examples", ["examples"], "cli"),
]
_GROUPS = {"task", "runs"}


def _unavailable(name: str, extra: str, module: str | None) -> None:
    """Register `name` as a stub that says which extra brings it (any arguments accepted)."""
    hint = install_hint(feature=f"klingflow {name}", extra=extra, module=module)

    def stub(ctx: typer.Context) -> None:
        err_console.print(f"error: {hint}", markup=False, highlight=False)
        raise typer.Exit(code=MISSING_EXTRA_EXIT_CODE)

    app.command(
        name,
        help=f"(not installed: pip install 'klingflow[{extra}]')",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )(stub)


def _register(module_name: str, names: list[str], extra: str) -> None:
    try:
        module = importlib.import_module(f"klingflow.cli.{module_name}")
    except ModuleNotFoundError as error:
        if (error.name or "klingflow").partition(".")[0] == "klingflow":
            raise  # our own module is missing: a bug, not an install choice
        for name in names:
            _unavailable(name, extra, error.name)
        return
    for name in names:
        if name in _GROUPS:
            app.add_typer(getattr(module, f"{name}_app"), name=name)
        else:
            app.command()(getattr(module, name))


for _module_name, _names, _extra in _COMMANDS:
    _register(_module_name, _names, _extra)


def main() -> None:
    """Console-script entry point."""
    app()
