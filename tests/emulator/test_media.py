"""Decode what the emulator's media renderer writes and check it against the request."""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from klingflow.emulator.media import Shot, frame_size, render_cover, render_video

FPS = 8
SMALL = 90  # max_height that keeps every test fast


def _duration_seconds(path: Path) -> tuple[float, float]:
    """(container duration, video stream duration) in seconds."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert container.duration is not None
        assert stream.duration is not None
        assert stream.time_base is not None
        return container.duration / av.time_base, float(stream.duration * stream.time_base)


def _frame_means(path: Path) -> list[np.ndarray]:
    """Mean RGB colour of every decoded video frame, in order."""
    with av.open(str(path)) as container:
        return [
            frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0)
            for frame in container.decode(video=0)
        ]


def _segments(means: list[np.ndarray], jump: float = 40.0) -> list[int]:
    """Lengths of runs of consecutive frames whose mean colour stays close (a new run on a jump)."""
    lengths = [1]
    for previous, current in itertools.pairwise(means):
        if float(np.linalg.norm(np.round(current) - np.round(previous))) > jump:
            lengths.append(1)
        else:
            lengths[-1] += 1
    return lengths


@pytest.mark.parametrize(
    ("aspect_ratio", "resolution", "expected"),
    [
        ("16:9", "720p", (1280, 720)),
        ("9:16", "720p", (720, 1280)),
        ("1:1", "720p", (720, 720)),
        ("16:9", "1080p", (1920, 1080)),
        ("9:16", "1080p", (1080, 1920)),
        ("1:1", "1080p", (1080, 1080)),
    ],
)
def test_frame_size_matches_kling_sizes(
    aspect_ratio: str, resolution: str, expected: tuple[int, int]
) -> None:
    """Full-size frames have a 720 or 1080 pixel short side in the requested orientation."""
    assert frame_size(aspect_ratio, resolution) == expected


@pytest.mark.parametrize("aspect_ratio", ["16:9", "9:16", "1:1"])
@pytest.mark.parametrize("resolution", ["720p", "1080p"])
@pytest.mark.parametrize("max_height", [90, 101, 180, 719])
def test_frame_size_caps_height_keeping_aspect_and_even_sizes(
    aspect_ratio: str, resolution: str, max_height: int
) -> None:
    """max_height bounds the height, keeps the aspect ratio (to rounding) and even sizes."""
    full_w, full_h = frame_size(aspect_ratio, resolution)
    width, height = frame_size(aspect_ratio, resolution, max_height=max_height)
    assert height <= max_height
    assert height >= max_height - 1
    assert width % 2 == 0
    assert height % 2 == 0
    assert abs(width / height - full_w / full_h) < 2.5 / height


def test_frame_size_ignores_a_cap_above_the_full_height() -> None:
    """A max_height larger than the full frame leaves the frame at full size."""
    assert frame_size("16:9", "720p", max_height=2000) == (1280, 720)
    assert frame_size("16:9", "720p", max_height=90) == (160, 90)


@pytest.mark.parametrize(
    ("aspect_ratio", "resolution", "max_height", "match"),
    [
        ("4:3", "720p", None, "aspect_ratio"),
        ("", "", None, "aspect_ratio"),
        ("16:9", "480p", None, "resolution"),
        ("16:9", "720p", 0, "max_height"),
        ("1:1", "1080p", -4, "max_height"),
    ],
)
def test_frame_size_rejects_unknown_values(
    aspect_ratio: str, resolution: str, max_height: int | None, match: str
) -> None:
    """Unknown aspect ratios, resolutions and impossible caps raise ValueError."""
    with pytest.raises(ValueError, match=match):
        frame_size(aspect_ratio, resolution, max_height=max_height)


@pytest.mark.parametrize(
    ("aspect_ratio", "resolution", "max_height"),
    [("16:9", "720p", SMALL), ("9:16", "720p", 180), ("1:1", "1080p", 120), ("9:16", "1080p", 96)],
)
def test_video_frames_have_the_frame_size(
    tmp_path: Path, aspect_ratio: str, resolution: str, max_height: int
) -> None:
    """Every decoded frame has exactly the size frame_size returned."""
    width, height = frame_size(aspect_ratio, resolution, max_height=max_height)
    path = tmp_path / "clip.mp4"
    render_video(path, shots=[Shot("a fox", 1.0)], width=width, height=height, fps=FPS)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (width, height)
        sizes = {(frame.width, frame.height) for frame in container.decode(video=0)}
    assert sizes == {(width, height)}


@pytest.mark.parametrize("durations", [[5.0], [2.0, 1.5, 1.5], [1.3, 2.7], [0.5, 0.25, 0.75, 1.0]])
def test_video_duration_is_the_sum_of_shot_durations(
    tmp_path: Path, durations: list[float]
) -> None:
    """Container and video stream durations equal the total shot duration within one frame."""
    width, height = frame_size("16:9", "720p", max_height=SMALL)
    path = tmp_path / "clip.mp4"
    shots = [Shot(f"shot {i}", d) for i, d in enumerate(durations)]
    render_video(path, shots=shots, width=width, height=height, fps=FPS)
    container_s, stream_s = _duration_seconds(path)
    assert container_s == pytest.approx(sum(durations), abs=1 / FPS)
    assert stream_s == pytest.approx(sum(durations), abs=1 / FPS)
    assert len(_frame_means(path)) == pytest.approx(sum(durations) * FPS, abs=1)


@pytest.mark.parametrize("durations", [[1.0], [1.0, 1.0], [1.0, 0.5, 1.5], [0.5] * 8])
def test_each_shot_is_a_visibly_distinct_segment(tmp_path: Path, durations: list[float]) -> None:
    """Grouping frames by mean colour yields one run per shot, each about as long as the shot."""
    width, height = frame_size("16:9", "720p", max_height=SMALL)
    path = tmp_path / "clip.mp4"
    prompts = ["a red fox runs through deep snow at dawn, cinematic"] + ["x " * 80] * 10
    shots = [Shot(prompts[i], d) for i, d in enumerate(durations)]
    render_video(path, shots=shots, width=width, height=height, fps=FPS)
    lengths = _segments(_frame_means(path))
    assert len(lengths) == len(shots)
    for length, duration in zip(lengths, durations, strict=True):
        assert abs(length - duration * FPS) <= 1


def test_frames_change_within_a_shot(tmp_path: Path) -> None:
    """A moving element makes consecutive frames of one shot differ, so it plays as video."""
    width, height = frame_size("1:1", "720p", max_height=SMALL)
    path = tmp_path / "clip.mp4"
    render_video(path, shots=[Shot("still life", 1.0)], width=width, height=height, fps=FPS)
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert all(not np.array_equal(a, b) for a, b in itertools.pairwise(frames))


def test_video_draws_the_prompt_text(tmp_path: Path) -> None:
    """A longer prompt puts more light text pixels on the first frame than an empty one."""
    width, height = frame_size("16:9", "720p", max_height=180)

    def bright_fraction(prompt: str) -> float:
        path = tmp_path / f"{len(prompt)}.mp4"
        render_video(path, shots=[Shot(prompt, 0.5)], width=width, height=height, fps=FPS)
        with av.open(str(path)) as container:
            first = next(iter(container.decode(video=0))).to_ndarray(format="rgb24")
        return float((first.min(axis=2) > 200).mean())

    empty, wordy = bright_fraction(""), bright_fraction("words and more words " * 5)
    assert empty > 0  # the shot label and the moving element
    assert wordy > 2 * empty


@pytest.mark.parametrize("with_audio", [False, True])
def test_audio_stream_is_present_only_when_requested(tmp_path: Path, with_audio: bool) -> None:
    """with_audio adds one AAC stream as long as the video; otherwise there is no audio."""
    width, height = frame_size("9:16", "720p", max_height=SMALL)
    path = tmp_path / "clip.mp4"
    shots = [Shot("one", 1.5), Shot("two", 1.0)]
    render_video(path, shots=shots, width=width, height=height, fps=FPS, with_audio=with_audio)
    with av.open(str(path)) as container:
        audio = list(container.streams.audio)
        assert len(audio) == (1 if with_audio else 0)
        if with_audio:
            stream = audio[0]
            assert stream.codec_context.name == "aac"
            assert stream.duration is not None
            assert stream.time_base is not None
            assert float(stream.duration * stream.time_base) == pytest.approx(2.5, abs=1 / FPS)
            samples = sum(frame.samples for frame in container.decode(audio=0))
            assert samples / stream.codec_context.sample_rate == pytest.approx(2.5, abs=0.1)


def test_audio_pitch_differs_per_shot(tmp_path: Path) -> None:
    """The dominant audio frequency in the middle of each shot differs between shots."""
    width, height = frame_size("16:9", "720p", max_height=SMALL)
    path = tmp_path / "clip.mp4"
    shots = [Shot("one", 1.0), Shot("two", 1.0)]
    render_video(path, shots=shots, width=width, height=height, fps=FPS, with_audio=True)
    with av.open(str(path)) as container:
        rate = container.streams.audio[0].codec_context.sample_rate
        pcm = np.concatenate(
            [f.to_ndarray().reshape(f.samples, -1).mean(axis=1) for f in container.decode(audio=0)]
        )
    peaks = []
    for start in (0.25, 1.25):  # half a second from the middle of each shot
        window = pcm[int(start * rate) : int((start + 0.5) * rate)]
        spectrum = np.abs(np.fft.rfft(window))
        peaks.append(float(np.argmax(spectrum)) * rate / len(window))
    assert abs(peaks[0] - peaks[1]) > 20


def test_video_codec_is_h264_when_available(tmp_path: Path) -> None:
    """Browsers need H.264 in yuv420p; mpeg4 is only the fallback for builds without it."""
    width, height = frame_size("16:9", "720p", max_height=SMALL)
    path = tmp_path / "clip.mp4"
    render_video(path, shots=[Shot("codec", 0.5)], width=width, height=height, fps=FPS)
    expected = "h264" if {"libx264", "h264"} & av.codecs_available else "mpeg4"
    with av.open(str(path)) as container:
        context = container.streams.video[0].codec_context
        assert context.name == expected
        assert context.pix_fmt == "yuv420p"
        assert container.format.name.startswith("mov,mp4")


def test_cover_is_a_png_of_the_requested_size(tmp_path: Path) -> None:
    """The cover decodes as a PNG with the requested size and the first shot's colour."""
    width, height = frame_size("9:16", "1080p", max_height=180)
    cover, video = tmp_path / "cover.png", tmp_path / "clip.mp4"
    render_cover(cover, prompt="a fox at dawn", width=width, height=height)
    render_video(video, shots=[Shot("a fox at dawn", 0.5)], width=width, height=height, fps=FPS)
    with Image.open(cover) as image:
        assert image.format == "PNG"
        assert image.size == (width, height)
        cover_mean = np.asarray(image.convert("RGB")).reshape(-1, 3).mean(axis=0)
    assert float(np.linalg.norm(cover_mean - _frame_means(video)[0])) < 10


def test_files_are_written_without_leftover_temp_files(tmp_path: Path) -> None:
    """After success the folder holds only the requested files (temp files were renamed)."""
    width, height = frame_size("16:9", "720p", max_height=SMALL)
    render_video(tmp_path / "a.mp4", shots=[Shot("a", 0.5)], width=width, height=height)
    render_video(
        tmp_path / "a.mp4", shots=[Shot("b", 0.5)], width=width, height=height, with_audio=True
    )
    render_cover(tmp_path / "a.png", prompt="a", width=width, height=height)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "a.png"]


def test_failed_write_keeps_the_old_file_and_removes_the_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the final rename fails, readers still see the previous file and no temp file remains."""
    width, height = frame_size("16:9", "720p", max_height=SMALL)
    path = tmp_path / "clip.mp4"
    render_video(path, shots=[Shot("old", 0.5)], width=width, height=height)
    before = path.read_bytes()

    def fail(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk on fire"):
        render_video(path, shots=[Shot("new", 1.0)], width=width, height=height)
    with pytest.raises(OSError, match="disk on fire"):
        render_cover(tmp_path / "cover.png", prompt="new", width=width, height=height)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


@pytest.mark.parametrize(
    ("shots", "width", "height", "fps", "match"),
    [
        ([], 160, 90, FPS, "empty"),
        ([Shot("zero", 0.0)], 160, 90, FPS, "duration"),
        ([Shot("negative", -1.0)], 160, 90, FPS, "duration"),
        ([Shot("ok", 1.0), Shot("nan", math.nan)], 160, 90, FPS, "duration"),
        ([Shot("inf", math.inf)], 160, 90, FPS, "duration"),
        ([Shot("shorter than a frame", 0.05)], 160, 90, FPS, "duration"),
        ([Shot("odd width", 1.0)], 161, 90, FPS, "even"),
        ([Shot("no height", 1.0)], 160, 0, FPS, "even"),
        ([Shot("no fps", 1.0)], 160, 90, 0, "fps"),
    ],
)
def test_render_video_rejects_invalid_input(
    tmp_path: Path, shots: list[Shot], width: int, height: int, fps: int, match: str
) -> None:
    """Invalid shots, sizes or frame rates raise ValueError and write nothing."""
    with pytest.raises(ValueError, match=match):
        render_video(tmp_path / "clip.mp4", shots=shots, width=width, height=height, fps=fps)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("width", "height"), [(0, 90), (160, -2)])
def test_render_cover_rejects_invalid_sizes(tmp_path: Path, width: int, height: int) -> None:
    """A cover needs a positive size."""
    with pytest.raises(ValueError, match="positive"):
        render_cover(tmp_path / "cover.png", prompt="p", width=width, height=height)
    assert list(tmp_path.iterdir()) == []
