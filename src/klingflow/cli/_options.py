"""Option and argument types that several commands share, so each reads and helps the same.

Typer reads these `Annotated` aliases as the option's flags and help; a command writes
`as_json: AsJson = False` instead of repeating the `typer.Option(...)`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import typer

__all__ = ["AsJson", "DeadlineMinutes", "LogFormat", "LogFormatOption", "PollSeconds", "RunId"]

# No workflows import here: `klingflow video` must work with only the `cli` extra installed.

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
RunId = Annotated[str, typer.Argument(help="The run id (run-...), or a unique beginning of it.")]
PollSeconds = Annotated[
    float,
    # One variable for every first poll pause: the engine's Settings.poll_seconds reads it too.
    typer.Option("--poll-interval", envvar="KLINGFLOW_POLL_SECONDS", help="First poll pause (s)."),
]
DeadlineMinutes = Annotated[float, typer.Option("--deadline", help="Give up waiting after (min).")]
LogFormat = Literal["text", "json"]
"""Run events on stderr as lines for people, or as JSON objects for log shippers."""
LogFormatOption = Annotated[
    LogFormat,
    typer.Option(
        "--log-format",
        help="Each run's start, pause and finish on stderr: text lines, or JSON objects.",
    ),
]
