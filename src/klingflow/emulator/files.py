"""Output files: found by name, rendered once on first download, served with byte ranges.

PiAPI hands out CDN URLs; the emulator serves `/files/<name>` in their place. Files are real
MP4s and PNGs (see `media`), rendered lazily because most tests never download, and cached
on disk by name; with `reuse_renders` every file of the same shape shares one render, which
keeps a 1,000-task benchmark from rendering 1,000 videos. Single byte ranges are served as
RFC 9110 says, so resumable downloads can be tested against real 206 answers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
import shutil
from pathlib import Path

from fastapi import Request
from fastapi.responses import Response

from klingflow.emulator import media
from klingflow.emulator.config import EmulatorConfig, FaultRule
from klingflow.emulator.faults import CutResponse
from klingflow.emulator.tasks import WATERMARK, EmulatedTask, OutputFile, TaskStore
from klingflow.piapi.models import TaskStatus

__all__ = [
    "GONE_MESSAGE",
    "REUSED_LABEL",
    "RenderCache",
    "UnsatisfiableRangeError",
    "byte_range",
    "file_response",
    "find_output",
]

GONE_MESSAGE = "file not found (outputs are deleted after the retention period)"
REUSED_LABEL = "emulated video"
"""What shared renders (`reuse_renders`) show in place of a prompt."""
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class UnsatisfiableRangeError(Exception):
    """The Range header asks for bytes the file does not have (answer 416)."""


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """First and last byte a single-range `Range` header asks for; None for the whole file.

    Headers we do not serve (other units, several ranges, `bytes=-`) are ignored, as RFC
    9110 allows; ranges that are invalid or past the end raise `UnsatisfiableRangeError`.
    """
    match = _RANGE.match(header.strip())
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first:
        start = int(first)
        end = int(last) if last else size - 1
        if start >= size or end < start:
            raise UnsatisfiableRangeError
        return start, min(end, size - 1)
    suffix = int(last)  # "bytes=-N": the last N bytes
    if suffix == 0 or size == 0:
        raise UnsatisfiableRangeError
    return max(0, size - suffix), size - 1


def find_output(store: TaskStore, name: str) -> tuple[EmulatedTask, OutputFile] | None:
    """The completed task and output a file name belongs to (its cover and watermarked copy
    included); None when no such file exists (yet)."""
    task = store.tasks.get(name[:36])  # file names start with the task's UUID
    if task is None or task.status != TaskStatus.COMPLETED:
        return None
    for output in task.files:
        if name == output.name or name == output.name.replace(".mp4", ".png"):
            return task, output
        if name == output.watermarked_name:
            return task, dataclasses.replace(output, is_watermarked=True)
    return None


def file_response(request: Request, name: str, data: bytes, fault: FaultRule | None) -> Response:
    """The answer to a GET or HEAD of `data`: whole, one byte range (206), or 416.

    A `truncate` or `drop` fault cuts the body short after the headers promised all of it.
    """
    size = len(data)
    status, start, end = 200, 0, size - 1
    headers = {
        "accept-ranges": "bytes",
        "content-type": "image/png" if name.endswith(".png") else "video/mp4",
        "etag": f'"{hashlib.sha256(data).hexdigest()[:16]}"',
    }
    try:
        wanted = byte_range(request.headers.get("range", ""), size)
    except UnsatisfiableRangeError:
        return Response(status_code=416, headers={"content-range": f"bytes */{size}"})
    if wanted is not None:
        (start, end), status = wanted, 206
        headers["content-range"] = f"bytes {start}-{end}/{size}"
    body = data[start : end + 1]
    if request.method == "HEAD":
        # The length of what a GET would send; the server sends no body for HEAD.
        headers["content-length"] = str(len(body))
        return Response(b"", status_code=status, headers=headers)
    if fault is not None and fault.action in ("truncate", "drop"):
        return CutResponse(
            body, keep=int(len(body) * fault.fraction), status=status, headers=headers
        )
    return Response(body, status_code=status, headers=headers)


class RenderCache:
    """Rendered files on disk under `files_dir`, each made once even when downloads race."""

    def __init__(self, files_dir: Path) -> None:
        self.files_dir = files_dir
        self._locks: dict[str, asyncio.Lock] = {}

    async def path(self, name: str, output: OutputFile, *, config: EmulatorConfig) -> Path:
        """The file for `name`, rendered now if it is not on disk yet."""
        if config.reuse_renders:
            name, output = _shared_render(name, output, fps=config.video_fps)
        path = self.files_dir / name
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            if not path.exists():
                await asyncio.to_thread(_render, path, output, fps=config.video_fps)
        return path

    def forget(self, name: str) -> None:
        """Delete one rendered file (its retention is over)."""
        (self.files_dir / name).unlink(missing_ok=True)

    def clear(self) -> None:
        """Delete every rendered file (on reset); the directory stays, empty."""
        shutil.rmtree(self.files_dir, ignore_errors=True)
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._locks.clear()


def _shared_render(name: str, output: OutputFile, *, fps: int) -> tuple[str, OutputFile]:
    """The file name and label-only output that every file of this shape shares.

    The shape is what the pixels and samples depend on once prompts are not drawn:
    shot durations (and so their number), frame size, fps and audio; covers only
    depend on the frame size.
    """
    suffix = Path(name).suffix
    shape: tuple[object, ...] = (suffix, output.width, output.height, output.is_watermarked)
    if suffix == ".mp4":
        shape += (output.shot_seconds, fps, output.has_audio)
    digest = hashlib.sha256(repr(shape).encode()).hexdigest()[:16]
    labels = (REUSED_LABEL,) * len(output.prompts)
    return f"shared-{digest}{suffix}", dataclasses.replace(output, prompts=labels)


def _render(path: Path, output: OutputFile, *, fps: int) -> None:
    # The size planned at submit, which the task's `works` already report.
    width, height = output.width, output.height
    if output.is_watermarked:
        output = dataclasses.replace(output, prompts=tuple(WATERMARK + p for p in output.prompts))
    if path.suffix == ".png":
        media.render_cover(path, prompt=output.prompts[0], width=width, height=height)
        return
    shots = [
        media.Shot(prompt, seconds)
        for prompt, seconds in zip(output.prompts, output.shot_seconds, strict=True)
    ]
    media.render_video(
        path, shots=shots, width=width, height=height, fps=fps, with_audio=output.has_audio
    )
