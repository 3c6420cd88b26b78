"""Render real, playable MP4s and PNG covers for emulated Kling tasks.

The emulator must hand out files that behave like PiAPI's: right size, right duration, one
visibly distinct segment per shot, optional audio. Content is synthetic on purpose: cheap to
make, easy for tests to verify by decoding.
"""

from __future__ import annotations

import itertools
import math
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
from av.audio.stream import AudioStream
from av.container import OutputContainer
from PIL import Image, ImageDraw, ImageFont

__all__ = ["Shot", "frame_size", "render_cover", "render_video"]

_SHORT_SIDE = {"720p": 720, "1080p": 1080}
_ASPECT = {"16:9": (16, 9), "9:16": (9, 16), "1:1": (1, 1)}
# Far apart in RGB (min pairwise distance > 90) so tests can tell shots apart by mean colour.
_PALETTE = (
    (190, 40, 50),
    (40, 150, 70),
    (40, 70, 190),
    (220, 190, 40),
    (140, 50, 170),
    (30, 160, 170),
)
_TONES_HZ = (440.0, 554.37, 659.25, 880.0, 493.88, 739.99)
_SAMPLE_RATE = 48_000
_AUDIO_CHUNK = 1024  # AAC frame size; feeding whole frames keeps the encoder happy
_Samples = np.ndarray[tuple[int, int], np.dtype[np.float32]]
_VideoCodec = Literal["libx264", "h264", "mpeg4"]
_VIDEO_CODECS: tuple[_VideoCodec, ...] = ("libx264", "h264", "mpeg4")  # H.264: browsers play it


@dataclass(frozen=True)
class Shot:
    """One segment of a (multi-shot) video: what it shows and how long it lasts."""

    prompt: str
    duration_seconds: float


def frame_size(
    aspect_ratio: str, resolution: str, *, max_height: int | None = None
) -> tuple[int, int]:
    """Return (width, height) for a Kling aspect ratio/resolution, optionally capped in height.

    The cap lets the emulator trade fidelity for speed; sizes stay even for yuv420p codecs.
    """
    if aspect_ratio not in _ASPECT:
        raise ValueError(f"unknown aspect_ratio {aspect_ratio!r}; expected {sorted(_ASPECT)}")
    if resolution not in _SHORT_SIDE:
        raise ValueError(f"unknown resolution {resolution!r}; expected {sorted(_SHORT_SIDE)}")
    aw, ah = _ASPECT[aspect_ratio]
    short = _SHORT_SIDE[resolution]
    width, height = (short * aw // ah, short) if aw >= ah else (short, short * ah // aw)
    if max_height is None or max_height >= height:
        return width, height
    if max_height < 2:
        raise ValueError(f"max_height must be at least 2, got {max_height}")
    new_height = max_height - max_height % 2
    new_width = max(2, 2 * round(width * new_height / height / 2))
    return new_width, new_height


def render_video(
    path: Path,
    *,
    shots: Sequence[Shot],
    width: int,
    height: int,
    fps: int = 8,
    with_audio: bool = False,
) -> None:
    """Write an MP4 with one coloured, captioned segment per shot, atomically at ``path``."""
    if not shots:
        raise ValueError("shots must not be empty")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    _check_size(width, height)
    for shot in shots:
        if not math.isfinite(shot.duration_seconds) or shot.duration_seconds * fps < 1:
            raise ValueError(f"shot duration must be at least one frame (1/{fps} s): {shot}")
    # Frame boundaries from cumulative time keep the total within one frame of the request.
    spans = list(itertools.pairwise(_boundaries(shots, fps)))

    def write(tmp: str) -> None:
        with av.open(tmp, "w", format="mp4", options={"movflags": "+faststart"}) as out:
            codec = _video_codec()
            options = {"preset": "ultrafast"} if codec != "mpeg4" else {}
            video = out.add_stream(codec, rate=fps, options=options)
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            aac = out.add_stream("aac", rate=_SAMPLE_RATE, layout="mono") if with_audio else None
            sound = (aac, _tone(shots)) if aac is not None else None
            sent = 0  # audio samples muxed so far; audio follows video so players can stream
            for index, (shot, (first, end)) in enumerate(zip(shots, spans, strict=True)):
                base = _shot_image(shot.prompt, index, len(shots), width, height)
                for n in range(first, end):
                    image = _animate(base, n - first, f"{n / fps:.2f}s")
                    frame = av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")
                    frame.pts, frame.time_base = n, Fraction(1, fps)
                    out.mux(video.encode(frame))
                    if sound is not None:
                        sent = _mux_audio(out, *sound, sent, (n + 1) * _SAMPLE_RATE // fps)
            out.mux(video.encode(None))
            if sound is not None:
                _mux_audio(out, *sound, sent, sound[1].shape[1])
                out.mux(sound[0].encode(None))

    _atomic_write(path, write)


def render_cover(path: Path, *, prompt: str, width: int, height: int) -> None:
    """Write a PNG that looks like the first frame of a single-shot video, atomically."""
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    image = _animate(_shot_image(prompt, 0, 1, width, height), 0, "0.00s")
    _atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def _check_size(width: int, height: int) -> None:
    if width < 2 or height < 2 or width % 2 or height % 2:
        raise ValueError(f"width and height must be even and >= 2, got {width}x{height}")


def _video_codec() -> _VideoCodec:
    for name in _VIDEO_CODECS:
        try:
            av.Codec(name, "w")
        except ValueError:  # UnknownCodecError: not in this FFmpeg build
            continue
        return name
    raise RuntimeError("no usable video encoder (libx264, h264, mpeg4) in PyAV's FFmpeg")


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write via a temp file in the target folder so readers never see a partial file."""
    tmp = str(path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp"))  # umask-respecting mode
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _font(height: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, height // 16))


def _shot_image(prompt: str, index: int, count: int, width: int, height: int) -> Image.Image:
    """The static part of a shot: background colour, ``shot i/n`` label, wrapped prompt."""
    image = Image.new("RGB", (width, height), _PALETTE[index % len(_PALETTE)])
    draw = ImageDraw.Draw(image)
    font = _font(height)
    margin = max(2, height // 30)
    line_h = int(font.size * 1.25) if isinstance(font, ImageFont.FreeTypeFont) else 11
    draw.text((margin, margin), f"shot {index + 1}/{count}", fill="white", font=font)
    lines: list[str] = []
    for word in prompt.split():
        while word:  # break words wider than the frame instead of overflowing
            cut = len(word)
            while cut > 1 and draw.textlength(word[:cut], font=font) > width - 2 * margin:
                cut -= 1
            head, word = word[:cut], word[cut:]
            joined = f"{lines[-1]} {head}" if lines else head
            if lines and draw.textlength(joined, font=font) <= width - 2 * margin:
                lines[-1] = joined
            else:
                lines.append(head)
    top, bottom = margin + line_h * 2, height - margin - line_h * 2
    for i, line in enumerate(lines):
        if top + (i + 1) * line_h > bottom:  # clip: no room for this line
            break
        draw.text((margin, top + i * line_h), line, fill="white", font=font)
    return image


def _animate(base: Image.Image, local: int, timecode: str) -> Image.Image:
    """Add what moves: a square sweeping along the bottom and a running timecode."""
    image = base.copy()
    draw = ImageDraw.Draw(image)
    width, height = image.size
    side, margin = max(2, height // 12), max(2, height // 30)
    x = margin + (local * max(1, width // 24)) % max(1, width - side - 2 * margin)
    draw.rectangle((x, height - side - margin, x + side, height - margin), fill="white")
    draw.text((width - margin, margin), timecode, fill="white", font=_font(height), anchor="ra")
    return image


def _mux_audio(
    out: OutputContainer, stream: AudioStream, tone: _Samples, start: int, stop: int
) -> int:
    """Encode ``tone[start:stop]`` in AAC-frame-sized chunks; return where it stopped."""
    while start < min(stop, tone.shape[1]):
        chunk = tone[:, start : start + _AUDIO_CHUNK]
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = _SAMPLE_RATE, start
        frame.time_base = Fraction(1, _SAMPLE_RATE)
        out.mux(stream.encode(frame))
        start += _AUDIO_CHUNK
    return start


def _boundaries(shots: Sequence[Shot], rate: int) -> list[int]:
    """Start/end sample (or frame) index of every shot, rounded from cumulative time."""
    return [0, *(round(t * rate) for t in itertools.accumulate(s.duration_seconds for s in shots))]


def _tone(shots: Sequence[Shot]) -> _Samples:
    """A mono sine whose pitch changes per shot, so shots are audibly distinct too."""
    bounds = _boundaries(shots, _SAMPLE_RATE)
    samples = np.zeros((1, bounds[-1]), dtype=np.float32)
    for index, (start, end) in enumerate(itertools.pairwise(bounds)):
        t = np.arange(end - start, dtype=np.float64) / _SAMPLE_RATE
        freq = _TONES_HZ[index % len(_TONES_HZ)]
        samples[0, start:end] = 0.2 * np.sin(2 * np.pi * freq * t)
    return samples
