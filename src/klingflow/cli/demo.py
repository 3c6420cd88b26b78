"""`klingflow demo` (what `make demo` runs): real commands against the in-process emulator.

No key and no money: the emulator runs on a loopback port, 30 times faster than PiAPI, and
the same `klingflow video` code that talks to PiAPI talks to it over HTTP.
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
from klingflow.cli.videos import video
from klingflow.emulator import EmulatorConfig, EmulatorServer

__all__ = ["demo"]

DEMO_KEY = "demo-key"


@contextmanager
def _pointed_at(url: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in ("PIAPI_BASE_URL", "PIAPI_API_KEY")}
    os.environ.update(PIAPI_BASE_URL=url, PIAPI_API_KEY=DEMO_KEY)
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
        kinds = [video_stream.codec_context.name] + [
            a.codec_context.name for a in container.streams.audio
        ]
        seconds = float(container.duration or 0) / av.time_base
        return f"{seconds:.1f} s, {video_stream.width}x{video_stream.height}, {' + '.join(kinds)}"


def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Where to put the videos.")] = Path(
        "klingflow-demo"
    ),
    time_scale: Annotated[float, typer.Option(help="Emulated clock speed-up.")] = 30.0,
) -> None:
    """Make two Kling 3.0 videos on the local emulator and show where they are."""
    config = EmulatorConfig(api_keys=[DEMO_KEY], time_scale=time_scale, video_max_height=360)
    out_dir.mkdir(parents=True, exist_ok=True)
    with EmulatorServer(config) as emulator, _pointed_at(emulator.url):
        err.print(f"[bold]PiAPI emulator[/] on {emulator.url} (x{time_scale:g} speed)\n")
        prompt = "a lighthouse at dusk, waves crashing on the rocks"
        err.print(f"[bold]$ klingflow video {prompt!r} --duration 5 --audio --dry-run[/]")
        video(prompt=prompt, duration="5", audio=True, dry_run=True)
        err.print(f"\n[bold]$ klingflow video {prompt!r} --duration 5 --audio --out {out_dir}/[/]")
        before = set(out_dir.glob("*.mp4"))
        video(prompt=prompt, duration="5", audio=True, out_path=f"{out_dir}/", poll_seconds=0.5)
        shots = ["a dog runs along the beach:3", "it stops in front of a cat:2"]
        flags = " ".join(f"--shot {shot!r}" for shot in shots)
        err.print(f"\n[bold]$ klingflow video {flags} --out {out_dir}/[/]")
        video(shot=shots, out_path=f"{out_dir}/", poll_seconds=0.5)
        stats = emulator.stats()
    made = sorted(set(out_dir.glob("*.mp4")) - before)
    err.print(
        f"\n[bold green]done:[/] {len(made)} videos, {stats['creates']} paid submissions, "
        f"{stats['gets']} status checks"
    )
    for path in made:
        out.print(f"{path}  ({describe_mp4(path)})")
