"""One printed line and one documented exit code per kind of failure (docs/client.md)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from klingflow import errors
from klingflow.redaction import mask_secrets

__all__ = ["EXIT_CODES", "exit_code_for", "handles_errors", "state"]

P = ParamSpec("P")
R = TypeVar("R")

EXIT_CODES: list[tuple[type[errors.KlingflowError], int, str]] = [
    (errors.WorkflowDefinitionError, 15, "the workflow file is invalid; nothing ran or was spent"),
    (errors.InvalidRequestError, 3, "the request broke a rule; nothing was sent or spent"),
    (errors.AuthenticationError, 4, "the API key is missing or wrong"),
    (errors.InsufficientCreditsError, 5, "the account is out of credits"),
    (errors.RateLimitError, 6, "rate limited even after retrying"),
    (errors.TaskFailedError, 7, "the task failed at PiAPI"),
    (errors.WaitTimeoutError, 8, "still running at the deadline: resume the wait"),
    (errors.SubmitUncertainError, 9, "the submission may have reached PiAPI: reconcile"),
    (errors.TaskNotFoundError, 10, "no such task"),
    (errors.RunNotFoundError, 17, "no such run in the run database"),
    (errors.RunStateError, 18, "the run's status does not allow that; nothing was changed"),
    (errors.DownloadError, 11, "the output could not be downloaded"),
    (errors.PiAPIConnectionError, 12, "PiAPI could not be reached"),
    (errors.ServerError, 13, "PiAPI failed on its side"),
    (errors.KlingflowError, 14, "any other error PiAPI or klingflow reported"),
]
"""(error class, exit code, meaning), most specific first; 2 is a usage error, 1 a bug."""


class _State:
    debug = False


state = _State()
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def exit_code_for(error: errors.KlingflowError) -> int:
    return next(code for cls, code, _ in EXIT_CODES if isinstance(error, cls))


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
