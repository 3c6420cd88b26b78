"""`klingflow task get|wait|cancel TASK_ID`: look after a task that already exists."""

from __future__ import annotations

from typing import Annotated

import typer

from klingflow.cli._console import err, make_client, out, print_json, usd
from klingflow.cli._errors import handles_errors
from klingflow.cli._options import AsJson, DeadlineMinutes, PollSeconds
from klingflow.cli.exit_codes import TOO_LATE_EXIT_CODE
from klingflow.cli.videos import resumable, wait_and_download
from klingflow.piapi import Task, TaskStatus

__all__ = ["task_app"]

task_app = typer.Typer(
    help="Look after an existing task: get it, wait for it (and download), cancel it.",
    no_args_is_help=True,
)
TaskId = Annotated[str, typer.Argument(help="The PiAPI task id.")]


def show_task(task: Task, *, as_json: bool) -> None:
    """A task as PiAPI has it now: JSON, or its status, times, cost, video and error."""
    if as_json:
        print_json(task.public_dict())
        return
    meta = task.meta
    out.print(f"{task.task_id}  {task.status.value}  ({task.model} {task.task_type})")
    for label, stamp in (
        ("created", meta.created_at),
        ("started", meta.started_at),
        ("ended", meta.ended_at),
    ):
        if stamp is not None:
            out.print(f"  {label:8} {stamp.isoformat()}")
    out.print(f"  cost     {usd(task.cost_usd)} ({meta.usage.type})")
    if task.video_url:
        out.print(f"  video    {task.video_url}")
    if task.error.is_error:
        out.print(f"  error    {task.error.summary()}")


@task_app.command("get")
@handles_errors
def get(task_id: TaskId, as_json: AsJson = False) -> None:
    """Show a task as PiAPI sees it now."""
    with make_client() as client:
        show_task(client.get(task_id), as_json=as_json)


@task_app.command("wait")
@handles_errors
def wait(
    task_id: TaskId,
    out_path: Annotated[
        str | None,
        typer.Option("--out", help="Also download the video here (a folder if it ends in /)."),
    ] = None,
    as_json: AsJson = False,
    poll_seconds: PollSeconds = 2.0,
    deadline_minutes: DeadlineMinutes = 60.0,
) -> None:
    """Wait for a task to finish (resume here after a timeout; never resubmit)."""
    with make_client() as client, resumable(task_id, out_path=out_path):
        wait_and_download(
            client,
            client.get(task_id),
            out_path=out_path,
            poll_seconds=poll_seconds,
            deadline_minutes=deadline_minutes,
            as_json=as_json,
        )


@task_app.command("cancel")
@handles_errors
def cancel(task_id: TaskId, as_json: AsJson = False) -> None:
    """Cancel a task that has not started processing (PiAPI refuses later). A task that
    already finished is left as it is: exit 20, with its status and what it was charged."""
    with make_client() as client:
        before = client.get(task_id)
        # The client returns a finished task as it is; only the CLI's user must hear "too late".
        task = before if before.is_terminal else client.cancel(task_id)
    show_task(task, as_json=as_json)
    if before.is_terminal or task.status == TaskStatus.COMPLETED:
        err.print(
            f"error: too late to cancel {task.task_id}: {task.status.value}, "
            f"charged {usd(task.cost_usd)}",
            markup=False,
        )
        raise typer.Exit(code=TOO_LATE_EXIT_CODE)
