"""`--help` reads as prose: plain placeholders, and no sentence broken where the source was."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from klingflow.cli import app
from klingflow.cli._help import unwrap
from klingflow.cli._lazy import LazyGroup

PYTHON_PLACEHOLDER = re.compile(r"<(bool|str|int|float|Path|list\[[^\]]*\])>")


def root_group() -> LazyGroup:
    root = typer.main.get_command(app)
    assert isinstance(root, LazyGroup)
    return root


def every_command_path() -> list[list[str]]:
    root = root_group()
    paths: list[list[str]] = [[]]
    for name in root.list_commands(root.make_context("klingflow", [], resilient_parsing=True)):
        command = root.load(name)  # imported now: the root lists commands it has not loaded
        paths.append([name])
        paths += [[name, sub] for sub in getattr(command, "commands", {})]
    return paths


def test_the_root_lists_each_command_with_its_own_help() -> None:
    """`klingflow --help` lists every command without importing it: the help it shows is the
    first paragraph of the command's own docstring, word for word."""
    root = root_group()
    ctx = root.make_context("klingflow", [], resilient_parsing=True)
    for name in root.list_commands(ctx):
        listed = root.get_command(ctx, name)
        loaded = root.load(name)
        assert listed is not None
        assert listed.help == (unwrap(loaded.help) or "").split("\n\n")[0], name


@pytest.mark.parametrize("path", every_command_path(), ids=lambda path: " ".join(path) or "root")
def test_help_shows_no_python_type_placeholders(path: list[str]) -> None:
    """No `<bool>`, `<str>` or `<list[Path]>` beside any option of any command."""
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    assert not PYTHON_PLACEHOLDER.search(result.output), result.output


def test_root_help_lists_each_command_on_one_line_when_there_is_room() -> None:
    """Docstrings wrapped in the source are not wrapped mid-sentence in `klingflow --help`."""
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "400"})
    lines = result.output.splitlines()
    [validate] = [line for line in lines if "│ validate " in line]
    assert "templates, and the literal Kling parameters" in validate
    assert "Prints one line per problem." in validate
    [worker] = [line for line in lines if "│ worker " in line]
    assert "until interrupted (Ctrl-C)." in worker


def test_flags_and_values_show_plain_names() -> None:
    """Flags show nothing, values TEXT/INTEGER/PATH, repeated ones TEXT..."""
    result = CliRunner().invoke(app, ["video", "--help"], env={"COLUMNS": "200"})
    words = " ".join(result.output.split())
    assert "--shot TEXT... A multi-shot" in words
    assert "--dry-run Validate and estimate" in words
