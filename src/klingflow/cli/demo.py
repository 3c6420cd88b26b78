"""`klingflow demo` (what `make demo` runs): the batch example, durably, on a local emulator.

No key and no money: the emulator runs in-process on a loopback port, 30 times faster than
PiAPI, and the same `klingflow` commands that talk to PiAPI talk to it over HTTP. Runs are
kept in `./klingflow-demo/home`, so `klingflow runs show` works afterwards with
KLINGFLOW_HOME pointing there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import av
import typer

from klingflow.cli._console import err, out
from klingflow.cli.examples import examples_dir
from klingflow.cli.execution import run
from klingflow.cli.runs import show
from klingflow.cli.videos import video
from klingflow.emulator import EmulatorConfig, EmulatorServer
from klingflow.workflows.database import make_engine
from klingflow.workflows.runlog import RunLog

__all__ = ["demo"]

DEMO_KEY = "demo-key"


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def describe_mp4(path: Path) -> str:
    """Duration, frame size and streams, read back with PyAV: proof the file plays."""
    with av.open(str(path)) as container:
        video_stream = container.streams.video[0]
        codecs = [video_stream.codec_context.name]
        codecs += [audio.codec_context.name for audio in container.streams.audio]
        seconds = float(container.duration or 0) / av.time_base
        return f"{seconds:.1f} s, {video_stream.width}x{video_stream.height}, {' + '.join(codecs)}"


def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Where the demo keeps its runs.")] = Path(
        "klingflow-demo"
    ),
    time_scale: Annotated[float, typer.Option(help="Emulated clock speed-up.")] = 30.0,
) -> None:
    """Price a video, then run the batch example (5 videos) durably and show its run log."""
    workflow = examples_dir() / "batch-from-csv.yaml"
    home = (out_dir / "home").resolve()
    config = EmulatorConfig(api_keys=[DEMO_KEY], time_scale=time_scale, video_max_height=360)
    with (
        EmulatorServer(config) as emulator,
        _environment(
            PIAPI_BASE_URL=emulator.url,
            PIAPI_API_KEY=DEMO_KEY,
            KLINGFLOW_HOME=str(home),
            KLINGFLOW_POLL_SECONDS="0.5",
        ),
    ):
        err.print(f"[bold]PiAPI emulator[/] on {emulator.url} (x{time_scale:g} speed)\n")
        prompt = "a lighthouse at dusk, waves crashing on the rocks"
        err.print(f"[bold]$ klingflow video {prompt!r} --duration 5 --audio --dry-run[/]")
        video(prompt=prompt, duration="5", audio=True, dry_run=True)
        rows = workflow.parent / "prompts.csv"
        err.print(f"\n[bold]$ klingflow run {workflow.name} -i rows=@{rows.name}[/]")
        try:
            run(file=workflow, inputs=[f"rows=@{rows}"])
        except typer.Exit as done:
            if done.exit_code:
                raise
        runlog = RunLog(make_engine(f"sqlite:///{home / 'klingflow.sqlite'}"))
        [record] = runlog.list_runs(limit=1)
        err.print(f"\n[bold]$ klingflow runs show {record.run_id}[/]")
        show(run_id=record.run_id)
        stats = emulator.stats()
    made = sorted(Path(record.output_dir).glob("*.mp4"))
    err.print(
        f"\n[bold green]done:[/] {len(made)} videos, {stats['creates']} paid submissions, "
        f"{stats['gets']} status checks; run log in {home}"
    )
    for path in made:
        out.print(f"{path}  ({describe_mp4(path)})")
    err.print(
        "\nnext, runs in a web UI: `klingflow examples` (copies the examples to ./examples), "
        "`klingflow emulator --time-scale 50 &`, then `PIAPI_BASE_URL=http://127.0.0.1:8787 "
        "PIAPI_API_KEY=any-key klingflow serve --workflows examples/` and open "
        "http://127.0.0.1:8000/ (docs/service.md)"
    )
