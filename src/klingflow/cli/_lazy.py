"""Commands imported when they run, not when `klingflow` starts.

Importing every command's module at start costs about a second and a half (FastAPI for
`serve`, PyAV and numpy for `emulator`, DBOS for `run`...) before `klingflow runs show` or
`klingflow --help` does anything. The root group lists each command from a table of names
and help texts, and imports a command's module only when that command is invoked (or its own
`--help` is asked for). A module whose pip extra is missing becomes a stub that names the
extra and exits with `MISSING_EXTRA_EXIT_CODE`.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

import typer
from typer.core import TyperCommand

from klingflow.cli._errors import err_console
from klingflow.cli._help import ReadableHelpGroup, readable_help
from klingflow.extras import MISSING_EXTRA_EXIT_CODE, install_hint, modules_of_extra

__all__ = ["LazyCommand", "LazyGroup"]


@dataclass(frozen=True)
class LazyCommand:
    """A command as the root lists it: where it lives, the extra it needs, its help line.

    `help` is the first paragraph of the command's docstring (tests/cli/test_help.py checks
    that the two agree); a group's command is the attribute `<name>_app` of its module.
    `probe`: the module imports its extra's packages only when the command runs (so that its
    `--help` is quick), so they are looked for, not imported, before it loads."""

    name: str
    module: str
    extra: str
    help: str
    group: bool = False
    probe: bool = False


def _missing(extra: str) -> str | None:
    """The first module `extra` brings that cannot be found (found, not imported: cheap)."""
    for module in modules_of_extra(extra):
        try:
            if importlib.util.find_spec(module) is None:
                return module
        except ValueError:  # in sys.modules as None: blocked, as "not installed"
            return module
    return None


def _installed(extra: str) -> bool:
    """Whether the modules `extra` brings can be found."""
    return _missing(extra) is None


def _listed(entry: LazyCommand, installed: bool) -> TyperCommand:
    """What `--help` shows for a command not imported yet (it never runs)."""
    text = entry.help
    if not installed:
        text = f"(not installed: pip install 'klingflow[{entry.extra}]')"
    return TyperCommand(name=entry.name, help=text, add_help_option=False)


def _stub(entry: LazyCommand, module: str | None) -> Any:
    """A command that says which extra brings `entry` (any arguments accepted)."""
    hint = install_hint(feature=f"klingflow {entry.name}", extra=entry.extra, module=module)

    def stub(ctx: typer.Context) -> None:
        err_console.print(f"error: {hint}", markup=False, highlight=False)
        raise typer.Exit(code=MISSING_EXTRA_EXIT_CODE)

    one = typer.Typer(add_completion=False)
    one.command(
        entry.name,
        help=f"(not installed: pip install 'klingflow[{entry.extra}]')",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )(stub)
    return typer.main.get_command(one)


def load(entry: LazyCommand) -> Any:
    """The click command of `entry`, its module imported now (a stub if its extra is missing)."""
    if entry.probe and (missing := _missing(entry.extra)) is not None:
        return _stub(entry, missing)
    try:
        module = importlib.import_module(f"klingflow.cli.{entry.module}")
    except ModuleNotFoundError as error:
        if (error.name or "klingflow").partition(".")[0] == "klingflow":
            raise  # our own module is missing: a bug, not an install choice
        return _stub(entry, error.name)
    if entry.group:
        command = typer.main.get_command(getattr(module, f"{entry.name}_app"))
    else:
        one = typer.Typer(add_completion=False)
        one.command(entry.name)(getattr(module, entry.name))
        command = typer.main.get_command(one)
    command.name = entry.name
    readable_help(command)
    return command


class LazyGroup(ReadableHelpGroup):
    """The root group: lists `commands` by name and help, imports one when it is invoked."""

    lazy: tuple[LazyCommand, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._entries = {entry.name: entry for entry in self.lazy}
        # Each extra looked for once (16 commands, 5 extras: find_spec walks sys.path).
        installed = {extra: _installed(extra) for extra in {e.extra for e in self.lazy}}
        for entry in self.lazy:
            self.commands.setdefault(entry.name, _listed(entry, installed[entry.extra]))

    def load(self, name: str) -> Any:
        """The real command `name` (imported now, then kept); None for an unknown name."""
        command = self.commands.get(name)
        entry = self._entries.pop(name, None)
        if entry is not None:
            command = self.commands[name] = load(entry)
        return command

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        """The command to run (or complete): imported here, not at start."""
        name, command, rest = super().resolve_command(ctx, args)
        if name is not None and name in self._entries:
            command = self.load(name)
        return name, command, rest
