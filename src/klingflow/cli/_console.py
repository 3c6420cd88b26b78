"""What the CLI shows while it works: the client from the environment, live status, progress.

Progress and status go to stderr, results to stdout, so `klingflow video ... --json | jq`
works. The API key comes only from `PIAPI_API_KEY`: an option would put it in shell history.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from klingflow.cli.exit_codes import USAGE_EXIT_CODE
from klingflow.errors import PiAPIConnectionError, PiAPIError

if TYPE_CHECKING:  # the client (httpx) is loaded by the commands that talk to PiAPI
    from klingflow.piapi import PiAPI, Task, WaitPolicy
    from klingflow.piapi.downloads import ProgressCallback

__all__ = [
    "STATUS_STYLE",
    "StatusLine",
    "download_progress",
    "err",
    "make_client",
    "out",
    "print_json",
    "require_key",
    "usd",
    "wait_policy",
]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def make_client() -> PiAPI:
    """A client configured from `PIAPI_API_KEY` and `PIAPI_BASE_URL` (usage error if no key)."""
    from klingflow.piapi import PiAPI

    if not os.environ.get("PIAPI_API_KEY"):
        err.print(
            "error: PIAPI_API_KEY is not set: export your PiAPI key, or run `klingflow "
            "emulator` and point PIAPI_BASE_URL at it (any key works there)"
        )
        raise typer.Exit(code=USAGE_EXIT_CODE)
    warned = False
    where = os.environ.get("PIAPI_BASE_URL") or "https://api.piapi.ai"

    def on_retry(error: PiAPIError, delay_seconds: float) -> None:
        # Said once, at the first failure: the retries that follow take seconds.
        nonlocal warned
        if isinstance(error, PiAPIConnectionError) and not warned:
            warned = True
            err.print(
                f"warning: PiAPI at {where} is not answering ({error}); retrying (Ctrl-C to stop)",
                markup=False,
            )

    try:
        return PiAPI(on_retry=on_retry)
    except ValueError as error:  # a base URL without a scheme: refused before any request
        err.print(f"error: {error}", markup=False)
        raise typer.Exit(code=USAGE_EXIT_CODE) from None


def require_key() -> None:
    """Engines talk to PiAPI: without a key, say so (exit 2) instead of a traceback."""
    make_client().close()


STATUS_STYLE = {
    "completed": "green", "succeeded": "green", "running": "cyan", "queued": "dim",
    "paused": "yellow", "failed": "red", "crashed": "red", "cancelled": "magenta",
    "skipped": "dim", "sent": "cyan", "accepted": "cyan", "uncertain": "yellow",
    "rejected": "red", "abandoned": "magenta",
}  # fmt: skip
"""The colour of each run, node and submission status, wherever the CLI shows one."""


def wait_policy(poll_seconds: float, deadline_minutes: float) -> WaitPolicy:
    """The client's wait from the options as people give them: seconds, then minutes."""
    from klingflow.piapi import WaitPolicy

    return WaitPolicy(
        initial_interval_seconds=poll_seconds,
        deadline_seconds=deadline_minutes * 60,
    )


def usd(amount: Decimal) -> str:
    """Dollars with cents, and a third decimal only where a price has one ($0.325)."""
    cents = amount.quantize(Decimal("0.01"))
    return f"${cents}" if cents == amount else f"${amount.quantize(Decimal('0.001'))}"


def print_json(data: Any) -> None:
    """Machine output on stdout: plain JSON, one document, indented by two.

    Written as is, not through rich, which lays out every line as text: 13 MB of JSON took
    four seconds of rich for well under one of encoding."""
    typer.echo(json.dumps(data, default=str, indent=2, ensure_ascii=False))


class StatusLine:
    """A live line: task id, status and elapsed time, redrawn as the wait goes on."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.started = time.monotonic()

    def update(self, task: Task) -> None:
        """Show `task`'s status from the next redraw on."""
        self.task = task

    def __rich__(self) -> Text:
        elapsed = int(time.monotonic() - self.started)
        return Text.assemble(
            ("⏳ ", ""),
            (self.task.task_id, "cyan"),
            "  ",
            (self.task.status.value, "bold"),
            f"  {elapsed // 60}:{elapsed % 60:02d} elapsed",
        )

    @contextmanager
    def live(self) -> Iterator[StatusLine]:
        """Redraw the line on stderr while the block runs, and clear it after."""
        # No redirection of sys.stdout/stderr: a Ctrl-C while Live starts would leave them
        # redirected, and the "resume with" line would never be printed.
        with Live(
            self,
            console=err,
            refresh_per_second=4,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        ):
            yield self


@contextmanager
def download_progress(label: str) -> Iterator[ProgressCallback]:
    """A progress bar for one download, fed by the client's byte callback."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err,
        transient=True,
    ) as progress:
        bar = progress.add_task(label, total=None)

        def on_progress(done: int, total: int | None) -> None:
            progress.update(bar, completed=done, total=total)

        yield on_progress


def describe_file(path: Path) -> str:
    """A saved file with its size, so the user sees at once that a video (not 0 bytes) came."""
    size = path.stat().st_size
    return f"{path} ({size / 1_000_000:.1f} MB)" if size >= 100_000 else f"{path} ({size} bytes)"
