"""`klingflow video`, `klingflow cost` and `klingflow account`."""

from __future__ import annotations

import json
import math
import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from klingflow.cli._console import (
    StatusLine,
    describe_file,
    download_progress,
    err,
    make_client,
    out,
    print_json,
    usd,
    wait_policy,
)
from klingflow.cli._data import read_data_file
from klingflow.cli._errors import handles_errors
from klingflow.cli._options import AsJson, DeadlineMinutes, PollSeconds
from klingflow.cli.exit_codes import INTERRUPTED_EXIT_CODE
from klingflow.errors import InvalidRequestError, Problem
from klingflow.formats import usd_text
from klingflow.piapi import KlingRequest, KlingVideoRequest, PiAPI, Task, parse_task_request
from klingflow.piapi.downloads import check_destination
from klingflow.piapi.kling import AspectRatio as KlingAspectRatio
from klingflow.piapi.kling import Mode as KlingMode
from klingflow.piapi.kling import VideoVersion
from klingflow.piapi.pricing import estimate_cost

__all__ = ["PRICE_STAND_IN_PROMPT", "account", "cost", "video"]

PRICE_STAND_IN_PROMPT = "a stand-in prompt"
"""What `cost` and `prices` price when no prompt is given: the price never depends on it."""

Prompt = Annotated[
    str | None, typer.Argument(help="What to film (optional with --shot or --image).")
]
Duration = Annotated[
    str | None, typer.Option(help="Seconds: 3-15 for Kling 3.0, 5 or 10 before; '5s' works.")
]
# Literal types from kling.py: typer shows them as choices, and shells complete them.
AspectRatio = Annotated[KlingAspectRatio, typer.Option("--aspect-ratio", help="Frame shape.")]
Model = Annotated[
    str | None, typer.Option("--model", help="Model as the seed action names it: 'Kling V2.1'.")
]
Version = Annotated[
    VideoVersion | None, typer.Option("--version", help="Kling version (default 3.0).")
]
Mode = Annotated[KlingMode, typer.Option(help="std (720p) or pro (1080p).")]
Audio = Annotated[bool, typer.Option("--audio/--no-audio", help="Native audio (2.6 and 3.0).")]
Shots = Annotated[
    list[str] | None,
    typer.Option("--shot", help="A multi-shot 'PROMPT:SECONDS' (repeat, Kling 3.0)."),
]
Image = Annotated[str | None, typer.Option("--image", help="First frame (image-to-video).")]
ImageTail = Annotated[str | None, typer.Option("--image-tail", help="Last frame.")]
Negative = Annotated[str | None, typer.Option("--negative-prompt", help="What to avoid.")]


def check_given(options: dict[str, str | None]) -> None:
    """An option given as '' or spaces is an error, not "unset": `--duration "$SECS"` with
    SECS unset would otherwise silently make the default (and bill for it)."""
    problems: list[Problem] = [
        (name, "is empty (an unset shell variable?): give a value or leave the option out")
        for name, value in options.items()
        if value is not None and not value.strip()
    ]
    if problems:
        raise InvalidRequestError(problems)


def check_wait(poll_seconds: float, deadline_minutes: float) -> None:
    """Positive, finite pauses and deadlines: 0 would poll in a busy loop, nan never ends."""
    problems: list[Problem] = []
    if not (math.isfinite(poll_seconds) and poll_seconds > 0):
        problems.append(
            ("--poll-interval", f"must be a positive number of seconds, got {poll_seconds}")
        )
    if not (math.isfinite(deadline_minutes) and deadline_minutes > 0):
        problems.append(
            ("--deadline", f"must be a positive number of minutes, got {deadline_minutes}")
        )
    if problems:
        raise InvalidRequestError(problems)


def parse_shot(text: str) -> dict[str, Any]:
    """'a dog runs:3' -> {"prompt": "a dog runs", "duration": 3}."""
    prompt, sep, seconds = text.rpartition(":")
    if not sep or not prompt.strip() or not seconds.strip().isdigit():
        raise InvalidRequestError([("--shot", f"expected 'PROMPT:SECONDS', got {text!r}")])
    return {"prompt": prompt.strip(), "duration": int(seconds)}


def build_video_request(
    *,
    prompt: str | None,
    duration: str | None,
    aspect_ratio: str,
    model: str | None,
    version: str | None,
    mode: str,
    audio: bool,
    shots: list[str] | None,
    image: str | None,
    image_tail: str | None,
    negative_prompt: str | None,
) -> KlingVideoRequest:
    """The validated request the flags describe (raises `InvalidRequestError`)."""
    check_given(
        {
            "--duration": duration,
            "--aspect-ratio": aspect_ratio,
            "--model": model,
            "--version": version,
            "--mode": mode,
            "--image": image,
            "--image-tail": image_tail,
            "--negative-prompt": negative_prompt,
        }
    )
    if shots and (prompt or duration):
        given = " and ".join(n for n, v in (("a PROMPT", prompt), ("--duration", duration)) if v)
        raise InvalidRequestError(
            [("--shot", f"sets each shot's prompt and seconds: drop {given}, or the --shot")]
        )
    data: dict[str, Any] = {
        "prompt": prompt,
        "duration": duration,
        "aspect_ratio": aspect_ratio,
        "model_name": model,
        "version": version,
        "mode": mode,
        "enable_audio": audio,
        "image_url": image,
        "image_tail_url": image_tail,
        "negative_prompt": negative_prompt,
    }
    if shots:
        data["multi_shots"] = [parse_shot(shot) for shot in shots]
    return KlingVideoRequest.from_input(data)


def checked_name(name: str, out_path: str) -> str:
    """The file name `--name` asks for inside the `--out` folder (".mp4" added when it has no
    suffix), checked before anything is sent: a path, a file `--out` or an existing file (a
    paid video it would overwrite) is refused with `InvalidRequestError`."""
    problem = None
    if "/" in name or "\\" in name or name.strip(".") == "":
        problem = f"{name!r} must be a file name, not a path (use --out for the folder)"
    elif not (out_path.endswith(("/", os.sep)) or Path(out_path).is_dir()):
        problem = f"--out {out_path} already names the file: make --out a folder (ending in /)"
    if problem is None:
        name = name if Path(name).suffix else f"{name}.mp4"
        if (Path(out_path) / name).exists():
            problem = f"{Path(out_path) / name} already exists: choose another name"
    if problem is not None:
        raise InvalidRequestError([("--name", problem)])
    return name


def show_estimate(request: KlingRequest, *, as_json: bool) -> None:
    """`--dry-run`: the request body that would be sent and its price; nothing is sent."""
    body = request.to_body()
    estimate = estimate_cost(request)
    if as_json:
        print_json({"request": body, "estimate_usd": usd_text(estimate)})
        return
    out.print_json(json.dumps(body))
    out.print(f"estimated cost: {usd(estimate)} ({request.duration_seconds} s) — nothing was sent")


@contextmanager
def resumable(task_id: str, *, out_path: str | None) -> Iterator[None]:
    """Ctrl-C stops the wait, not the task: print the task id and the command that resumes,
    and exit 130 (a shell's code for SIGINT). Entered as soon as the task id is known."""
    try:
        yield
    except KeyboardInterrupt:
        resume = f"klingflow task wait {task_id}"
        if out_path is not None:
            resume += f" --out {shlex.quote(out_path)}"
        err.print(
            f"interrupted: task {task_id} goes on at PiAPI (and is charged if it completes); "
            f"resume with `{resume}`, do not resubmit",
            markup=False,
        )
        raise typer.Exit(code=INTERRUPTED_EXIT_CODE) from None


def wait_and_download(
    client: PiAPI,
    task: Task,
    *,
    out_path: str | None,
    poll_seconds: float,
    deadline_minutes: float,
    as_json: bool,
    filename: str | None = None,
) -> None:
    """Wait with a live status line, download with a progress bar, report path and cost."""
    status = StatusLine(task)
    with status.live():
        done = client.wait(
            task.task_id,
            policy=wait_policy(poll_seconds, deadline_minutes),
            on_progress=status.update,
        )
    path = None
    if out_path is not None and done.video_url:
        with download_progress(f"downloading {done.task_id}") as on_progress:
            path = client.download(done, out_path, filename=filename, on_progress=on_progress)
    if as_json:
        print_json(
            {
                "task": done.public_dict(),
                "path": str(path) if path else None,
                "cost_usd": usd_text(done.cost_usd),
            }
        )
        return
    if path is not None:
        out.print(str(path))
        err.print(
            f"✔ {done.task_id} completed · saved {describe_file(path)} · cost {usd(done.cost_usd)}"
        )
    else:
        out.print(done.video_url or "")
        err.print(f"✔ {done.task_id} completed · cost {usd(done.cost_usd)}")


@handles_errors
def video(
    prompt: Prompt = None,
    duration: Duration = None,
    aspect_ratio: AspectRatio = "16:9",
    model: Model = None,
    version: Version = None,
    mode: Mode = "std",
    audio: Audio = False,
    shot: Shots = None,
    image: Image = None,
    image_tail: ImageTail = None,
    negative_prompt: Negative = None,
    out_path: Annotated[
        str,
        typer.Option("--out", help="File, or folder (existing or ending in /), for the MP4."),
    ] = "./",
    name: Annotated[
        str | None,
        typer.Option(
            "--name", help="File name in the --out folder (default: the task id); .mp4 added."
        ),
    ] = None,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Submit and print the task id at once.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and estimate the cost; send nothing.")
    ] = False,
    as_json: AsJson = False,
    poll_seconds: PollSeconds = 2.0,
    deadline_minutes: DeadlineMinutes = 60.0,
) -> None:
    """Make one Kling video: submit, wait with live status, download, print path and cost."""
    if prompt is None and not shot and image is None:
        # A usage error (2) like any missing argument, not an invalid request (3).
        raise typer.BadParameter(
            "missing: describe the video, or give --shot or --image", param_hint="'PROMPT'"
        )
    check_wait(poll_seconds, deadline_minutes)
    if not no_wait and not dry_run:
        check_destination(out_path, field="--out")
    request = build_video_request(
        prompt=prompt,
        duration=duration,
        aspect_ratio=aspect_ratio,
        model=model,
        version=version,
        mode=mode,
        audio=audio,
        shots=shot,
        image=image,
        image_tail=image_tail,
        negative_prompt=negative_prompt,
    )
    filename = None if name is None or no_wait else checked_name(name, out_path)
    if dry_run:
        show_estimate(request, as_json=as_json)
        return
    with make_client() as client:
        task = client.submit(request)
        if no_wait:
            # The seed action's return shape, so scripts written for it keep working.
            print_json(
                {"code": 200, "data": {"status": task.status.value, "task_id": task.task_id}}
            )
            return
        with resumable(task.task_id, out_path=out_path):
            err.print(f"submitted {task.task_id} · estimated {usd(client.estimate_cost(request))}")
            wait_and_download(
                client,
                task,
                out_path=out_path,
                poll_seconds=poll_seconds,
                deadline_minutes=deadline_minutes,
                as_json=as_json,
                filename=filename,
            )


@handles_errors
def cost(
    prompt: Prompt = None,
    duration: Duration = None,
    aspect_ratio: AspectRatio = "16:9",
    model: Model = None,
    version: Version = None,
    mode: Mode = "std",
    audio: Audio = False,
    shot: Shots = None,
    image: Image = None,
    negative_prompt: Negative = None,
    body: Annotated[
        Path | None,
        typer.Option(help="A whole request {model, task_type, input} (JSON or YAML), any type."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Estimate what a video (or any Kling task) costs, before spending anything; the prompt
    is optional, as the price does not depend on it."""
    if body is not None:
        data = read_data_file(body)
        if not isinstance(data, dict):
            raise InvalidRequestError([(str(body), "must hold a {model, task_type, input} object")])
        request, _ = parse_task_request(data)
    else:
        # The price does not depend on the prompt: `cost --duration 10 --mode pro` needs none.
        is_stand_in = prompt is None and not shot and image is None
        request = build_video_request(
            prompt=PRICE_STAND_IN_PROMPT if is_stand_in else prompt,
            duration=duration,
            aspect_ratio=aspect_ratio,
            model=model,
            version=version,
            mode=mode,
            audio=audio,
            shots=shot,
            image=image,
            image_tail=None,
            negative_prompt=negative_prompt,
        )
    if as_json:
        shown = request.to_body()
        if shown["input"].get("prompt") == PRICE_STAND_IN_PROMPT:
            del shown["input"]["prompt"]
        print_json({"request": shown, "estimate_usd": usd_text(estimate_cost(request))})
    else:
        out.print(
            f"{usd(estimate_cost(request))}  ({request.task_type}, {request.duration_seconds} s)"
        )


@handles_errors
def account(as_json: AsJson = False) -> None:
    """Show the account behind PIAPI_API_KEY: balance and unfinished tasks."""
    with make_client() as client:
        info = client.account()
        active = client.active_tasks()
    if as_json:
        print_json(
            {
                "account": info.model_dump(mode="json"),
                "active_tasks": {k: v.model_dump(mode="json") for k, v in active.items()},
            }
        )
        return
    balance = "unknown" if info.equivalent_in_usd is None else usd(info.equivalent_in_usd)
    out.print(f"account {info.account_name or '?'} ({info.account_id or '?'}) · balance {balance}")
    for provider, counts in active.items():
        out.print(
            f"{provider}: {counts.active_tasks} active "
            f"({counts.staged_count} staged, {counts.pending_count} pending, "
            f"{counts.processing_count} processing)"
        )
