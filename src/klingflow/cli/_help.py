"""Help that reads as prose: no Python type placeholders, no hard wraps mid-sentence.

Typer shows `<bool>`, `<str>` and `<list[Path]>` beside every option, and (in its rich mode)
keeps a docstring's line breaks, so a sentence wrapped at 100 columns in the source breaks in
the middle of `klingflow --help`. The root group fixes the whole command tree once, when Typer
builds it: flags show no placeholder, values show click's plain names (TEXT, INTEGER, PATH),
choices show `std|pro`, and single line breaks inside a paragraph become spaces.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args, get_origin

from typer.core import TyperGroup

__all__ = ["ReadableHelpGroup", "readable_help"]


def unwrap(text: str | None) -> str | None:
    """Join the lines of each paragraph; blank lines still separate paragraphs."""
    if not text:
        return text
    paragraphs = re.split(r"\n\s*\n", text.strip())
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def _label(annotation: Any) -> str:
    if get_origin(annotation) is list:
        return f"{_label(get_args(annotation)[0])}..."
    return _PLAIN_NAMES.get(annotation, getattr(annotation, "__name__", "value").upper())


_PLAIN_NAMES: dict[Any, str] = {str: "TEXT", int: "INTEGER", float: "NUMBER", Path: "PATH"}


def _placeholder(param: Any) -> str:
    """'' for flags, `std|pro` for choices, else a plain name (TEXT, INTEGER, NUMBER, PATH)."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    described = param.type_descriptor
    if described.is_choice:
        return "|".join(str(getattr(c, "value", c)) for c in described.choices or ())
    return _label(described.annotation)


def _readable_param(param: Any) -> None:
    # Typer >= 0.2x asks `display_type_rich` for the type column (and ignores metavar for
    # arguments): shadow it on the instance. Older Typer shows click's names already.
    if hasattr(param, "display_type_rich") and hasattr(param, "type_descriptor"):
        vars(param)["display_type_rich"] = lambda ctx, label=_placeholder(param): label


def readable_help(command: Any) -> None:
    """Fix `command`, its parameters and every subcommand, in place."""
    command.help = unwrap(command.help)
    for param in command.params:
        _readable_param(param)
    if getattr(command, "add_help_option", False):
        help_option = command.get_help_option(command.context_class(command))
        if help_option is not None:  # cached by the command: fixed once, shown every time
            _readable_param(help_option)
    for sub in getattr(command, "commands", {}).values():
        readable_help(sub)


class ReadableHelpGroup(TyperGroup):
    """The root `klingflow` group: its whole tree gets readable help (see module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        readable_help(self)

    def get_params(self, ctx: Any) -> Any:
        """The options as `--help` lists them, Typer's completion options made readable too."""
        # Typer adds --install-completion and --show-completion after __init__.
        params = super().get_params(ctx)
        for param in params:
            _readable_param(param)
        return params
