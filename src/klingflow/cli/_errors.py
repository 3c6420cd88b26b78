"""One printed line and one documented exit code (`cli/exit_codes.py`) per kind of failure."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from klingflow import errors
from klingflow.cli.exit_codes import exit_code_for
from klingflow.redaction import mask_secrets

__all__ = ["handles_errors", "state"]

P = ParamSpec("P")
R = TypeVar("R")


class _State:
    """`--debug`, set by the root callback and read by every command's error handler."""

    debug = False


state = _State()
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def redact(text: str) -> str:
    """Belt and braces: whatever the path, the configured key is never printed."""
    key = os.environ.get("PIAPI_API_KEY", "")
    return mask_secrets(text, (key,)) if len(key) >= 4 else text


def handles_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a `KlingflowError` into one line on stderr and its exit code (`--debug`: raise)."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except errors.KlingflowError as error:
            if state.debug:
                raise
            err_console.print(Text.assemble(("error: ", "bold red"), redact(str(error))))
            raise typer.Exit(code=exit_code_for(error)) from None

    return wrapper
