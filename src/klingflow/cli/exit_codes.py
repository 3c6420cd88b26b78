"""Every exit code of the `klingflow` command, in one table, as docs/client.md documents it.

Scripts branch on these codes (8: resume the wait, 9: reconcile before paying again), so they
are API: each kind of failure has its own code, and `tests/cli/test_docs_cli.py` checks that
every row here is a row of the documented table. 0 (success), 1 (an uncaught exception: a
bug) and 2 (a usage error) are Click's own and stay out of the table.
"""

from __future__ import annotations

from typing import NamedTuple

from klingflow import errors
from klingflow.extras import MISSING_EXTRA_EXIT_CODE

__all__ = [
    "EXIT_CODES",
    "INTERRUPTED_EXIT_CODE",
    "MISSING_EXTRA_EXIT_CODE",
    "PORT_IN_USE_EXIT_CODE",
    "RUN_NOT_COMPLETED",
    "TOO_LATE_EXIT_CODE",
    "USAGE_EXIT_CODE",
    "ExitCode",
    "exit_code_for",
    "exit_code_of",
]

USAGE_EXIT_CODE = 2
"""A bad or missing option or argument, or no `PIAPI_API_KEY`: Click's code for a usage error."""

RUN_NOT_COMPLETED = 16
"""A run paused, crashed or was cancelled instead of completing (`run`, `runs retry`)."""
TOO_LATE_EXIT_CODE = 20
"""`task cancel` on a task that had already finished: nothing was cancelled (or refunded)."""
PORT_IN_USE_EXIT_CODE = 21
"""`serve` or `emulator` on a port something else listens on."""
INTERRUPTED_EXIT_CODE = 130
"""Ctrl-C during a wait or a download: the task goes on at PiAPI; `task wait` resumes."""


class ExitCode(NamedTuple):
    """One row of the table: the error class it stands for (None for an outcome that is no
    error of ours, such as a paused run), the code, and its meaning as documented."""

    error: type[errors.KlingflowError] | None
    code: int
    meaning: str


EXIT_CODES: tuple[ExitCode, ...] = (
    ExitCode(
        errors.WorkflowDefinitionError,
        15,
        "the workflow file is invalid; nothing ran or was spent",
    ),
    ExitCode(errors.InvalidRequestError, 3, "the request broke a rule; nothing was sent or spent"),
    ExitCode(errors.AuthenticationError, 4, "the API key is missing or wrong"),
    ExitCode(errors.InsufficientCreditsError, 5, "the account is out of credits"),
    ExitCode(errors.RateLimitError, 6, "rate limited even after retrying"),
    ExitCode(errors.TaskFailedError, 7, "the task failed at PiAPI"),
    ExitCode(errors.WaitTimeoutError, 8, "still running at the deadline: resume the wait"),
    ExitCode(errors.SubmitUncertainError, 9, "the submission may have reached PiAPI: reconcile"),
    ExitCode(errors.TaskNotFoundError, 10, "no such task"),
    ExitCode(errors.RunNotFoundError, 17, "no such run in the run database"),
    ExitCode(errors.RunStateError, 18, "the run's status does not allow that; nothing was changed"),
    ExitCode(errors.DownloadError, 11, "the output could not be downloaded"),
    ExitCode(errors.PiAPIConnectionError, 12, "PiAPI could not be reached"),
    ExitCode(errors.ServerError, 13, "PiAPI failed on its side"),
    ExitCode(errors.KlingflowError, 14, "any other error PiAPI or klingflow reported"),
    ExitCode(
        None,
        RUN_NOT_COMPLETED,
        "a workflow run paused, crashed or was cancelled instead of completing "
        "(`klingflow run`, `runs retry`)",
    ),
    ExitCode(
        None,
        MISSING_EXTRA_EXIT_CODE,
        "the command's pip extra is not installed: the message names it "
        "(`pip install 'klingflow[workflows]'`)",
    ),
    ExitCode(
        None,
        TOO_LATE_EXIT_CODE,
        "too late to cancel: the task had already finished (`task cancel`); nothing changed",
    ),
    ExitCode(
        None,
        PORT_IN_USE_EXIT_CODE,
        "`serve` or `emulator`: the port is in use (said before anything else happens)",
    ),
    ExitCode(
        None,
        INTERRUPTED_EXIT_CODE,
        "interrupted (Ctrl-C): the task goes on at PiAPI; `klingflow task wait ID` resumes",
    ),
)
"""The error rows first, most specific class first (the first `isinstance` match wins)."""


def exit_code_for(error: errors.KlingflowError) -> int:
    """The code a command exits with when `error` ends it: its most specific row."""
    return next(row.code for row in EXIT_CODES if row.error and isinstance(error, row.error))


def exit_code_of(error_class: type[errors.KlingflowError]) -> int:
    """The code of the row written for exactly `error_class` (for a command that prints
    its own message, as `validate` does, and then exits as that error would)."""
    return next(row.code for row in EXIT_CODES if row.error is error_class)
